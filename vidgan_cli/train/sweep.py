"""Sweep bookkeeping: after ``vidgan train -m ...`` a table of the jobs and ``summary.csv``.

A Hydra callback (registered in conf/train.yaml), so it works with every launcher: basic, joblib,
submitit.  It only reads what each job wrote (``.hydra/overrides.yaml`` and ``summary.json``).
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("vidgan_cli.sweep")


def job_dirs(sweep_dir: Path) -> list[Path]:
    jobs = [p for p in sweep_dir.iterdir() if p.is_dir() and (p / ".hydra").is_dir()]
    return sorted(jobs, key=lambda p: (not p.name.isdigit(), int(p.name) if p.name.isdigit()
                                       else 0, p.name))


def flatten(prefix: str, value: Any, out: dict) -> dict:
    if isinstance(value, dict):
        for key, item in value.items():
            flatten(f"{prefix}/{key}" if prefix else str(key), item, out)
    elif isinstance(value, (int, float, str)) or value is None:
        out[prefix] = value
    return out


def collect(sweep_dir: Path) -> list[dict]:
    """One row per job: job, overrides, status, final metrics, run_dir."""
    rows = []
    for job in job_dirs(sweep_dir):
        overrides_file = job / ".hydra" / "overrides.yaml"
        overrides = OmegaConf.to_container(OmegaConf.load(overrides_file)) \
            if overrides_file.exists() else []
        summary_file = job / "summary.json"
        try:
            summary = json.loads(summary_file.read_text())
        except (OSError, json.JSONDecodeError):
            summary = {"status": "unknown (no summary.json)"}
        row = {"job": job.name, "overrides": " ".join(overrides),
               "status": summary.get("status", "unknown")}
        final = summary.get("final") or {}
        row.update(flatten("", {k: v for k, v in final.items() if k != "samples"}, {}))
        best = summary.get("best") or {}
        if best.get("metric"):
            row[f"best/{best['metric']}"] = best.get("value")
        if "error" in summary:
            row["error"] = summary["error"]
        row["run_dir"] = str(job)
        rows.append(row)
    return rows


def write_csv(rows: list[dict], path: Path) -> None:
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def print_table(rows: list[dict], title: str) -> None:
    from rich.console import Console
    from rich.table import Table
    shown = ["job", "overrides", "status", "step", "d_loss", "g_loss"]
    shown += sorted({k for row in rows for k in row if k.startswith(("eval/", "best/"))})
    table = Table(title=title)
    for column in shown:
        table.add_column(column)
    for row in rows:
        cells = [row.get(c) for c in shown]
        table.add_row(*("" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)
                        for v in cells))
    Console(stderr=True).print(table)


class SweepSummary(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        rows = collect(sweep_dir)
        write_csv(rows, sweep_dir / "summary.csv")
        failed = sum(row["status"] == "failed" for row in rows)
        print_table(rows, f"sweep {sweep_dir}: {len(rows)} jobs, {failed} failed")
        log.info("sweep summary: %s", sweep_dir / "summary.csv")
