"""``vidgan report RUN_OR_SWEEP_DIR [-o OUT.html]``: one self-contained HTML page for a run or a sweep.

A run page has the loss/throughput/eval curves (inline SVG), the sample videos over training, the
latest evaluation, the summary and the config.  A sweep page compares its jobs in a sortable table.
The page works offline: no server, no CDN; media are linked relative to the HTML file.  A run that is
still going (no summary yet, a half-written metrics line) is reported as it is, never an error.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from html import escape
from pathlib import Path
from urllib.parse import quote

import yaml

from vidgan_cli.svg import svg_line_chart, svg_sparkline
from vidgan_cli.train.sweep import job_dirs

EXPECTED = ("expected a run folder (with .hydra/, metrics.jsonl or summary.json, e.g. "
            "outputs/<date>/<time>) or a multirun folder (with multirun.yaml or job folders holding "
            ".hydra/, e.g. multirun/<date>/<time>)")
SAMPLE = re.compile(r"step_(\d+)\.(mp4|gif|png)$")
LOSSES, THROUGHPUT = ("d_loss", "g_loss"), "clips_per_s"


class ReportError(Exception):
    """The path given is not something we can report on."""


# --- reading a run folder ---------------------------------------------------------------------------

def read_metrics(path: Path) -> tuple[list[dict], int]:
    """The records of a metrics.jsonl and how many non-blank lines were not a JSON object with a
    numeric ``step`` (e.g. the half-written last line of a running or killed job)."""
    if not path.is_file():
        return [], 0
    rows, bad = [], 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            bad += 1
            continue
        if isinstance(row, dict) and is_number(row.get("step")):
            rows.append(row)
        else:
            bad += 1
    return rows, bad


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def series(rows: list[dict], key: str) -> list[tuple[float, float]]:
    return [(row["step"], row[key]) for row in rows if is_number(row.get(key))]


def latest_values(rows: list[dict], prefix: str = "") -> dict[str, tuple[float, int]]:
    """``key -> (last value, its step)`` for the numeric keys starting with ``prefix``."""
    found = {}
    for row in rows:
        for key, value in row.items():
            if key.startswith(prefix) and key != "step" and is_number(value):
                found[key] = (value, row["step"])
    return found


def read_json(path: Path, notes: list[str]) -> dict | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        notes.append(f"{path.name} is unreadable ({err}); ignored")
        return None
    return data if isinstance(data, dict) else None


def read_overrides(run_dir: Path) -> list[str]:
    path = run_dir / ".hydra" / "overrides.yaml"
    try:
        items = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else []
    except (OSError, yaml.YAMLError):
        return ["(unreadable .hydra/overrides.yaml)"]
    return [str(item) for item in items] if isinstance(items, list) else []


def sample_files(run_dir: Path) -> dict[int, dict[str, Path]]:
    """``step -> {"mp4": path, "gif": path, "png": path}`` (whichever exist), sorted by step."""
    found: dict[int, dict[str, Path]] = {}
    folder = run_dir / "samples"
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        match = SAMPLE.fullmatch(path.name)
        if match:
            found.setdefault(int(match.group(1)), {})[match.group(2)] = path
    return dict(sorted(found.items()))


def folder_kind(path: Path) -> str:
    """``"run"`` or ``"sweep"``; a ``ReportError`` naming what was expected otherwise."""
    if not path.exists():
        raise ReportError(f"{path}: no such folder; {EXPECTED}")
    if not path.is_dir():
        raise ReportError(f"{path} is a file; {EXPECTED}")
    if not (path / ".hydra").is_dir() and ((path / "multirun.yaml").is_file() or job_dirs(path)):
        return "sweep"
    if any((path / name).exists() for name in (".hydra", "metrics.jsonl", "summary.json")):
        return "run"
    raise ReportError(f"{path} is neither a run nor a multirun folder; {EXPECTED}")


# --- HTML pieces -------------------------------------------------------------------------------------

def href(target: Path, out_dir: Path) -> str:
    """A link that works when the page is opened from ``out_dir`` (also from a file:// URL)."""
    try:
        relative = Path(os.path.relpath(target, out_dir)).as_posix()
    except ValueError:  # another drive on Windows: no relative path exists
        return escape(target.resolve().as_uri())
    return escape(quote(relative + ("/" if target.is_dir() else "")))


def fmt(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}"
    return escape(str(value))


def table(header: list[str] | None, rows: list[list[str]], table_id: str, sortable: bool = False) -> str:
    """``rows`` hold ready-made cell markup (``<td>`` included), header cells are plain text."""
    cls = ' class="sortable"' if sortable else ""
    tip = ' title="click to sort"' if sortable else ""
    head = "".join(f"<th{tip}>{escape(h)}</th>" for h in header or [])
    head = f"<thead><tr>{head}</tr></thead>" if header else ""
    body = "".join(f"<tr>{''.join(cells)}</tr>" for cells in rows)
    return f'<table id="{table_id}"{cls}>{head}<tbody>{body}</tbody></table>'


def td(value, raw: bool = False) -> str:
    """A cell; numbers carry their exact value in ``data-sort`` for the sweep table's sorting."""
    sort = f' data-sort="{value!r}"' if is_number(value) else ""
    return f"<td{sort}>{value if raw else fmt(value)}</td>"


def section(title: str, body: str) -> str:
    return f"<section><h2>{escape(title)}</h2>{body}</section>"


def empty(text: str) -> str:
    return f'<p class="empty">{escape(text)}</p>'


CSS = """body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}h1{font-size:1.3em}
h2{font-size:1.1em;border-bottom:1px solid #ddd}table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}th{background:#f4f4f4}
table.sortable th{cursor:pointer}pre{background:#f8f8f8;padding:.8em;overflow:auto}
.notes{background:#fff5d6;padding:.5em 1em}.empty{color:#888;font-style:italic}
.samples{display:flex;flex-wrap:wrap;gap:12px}figure{margin:0}video,img{max-width:480px}
.chart text,.spark text{font-size:11px;fill:#444}.chart .chart-title{font-size:13px;font-weight:600}
.chart .grid{stroke:#eee}.chart .axis{stroke:#888}.charts{display:flex;flex-wrap:wrap;gap:16px}
.failed{color:#b00}.completed{color:#070}code{background:#f4f4f4;padding:0 3px}"""

# Sort the rows of a table.sortable by the clicked column; numbers by value (data-sort), empty
# cells last; a second click reverses.
SORT_JS = """document.querySelectorAll("table.sortable th").forEach((th, col) => th.onclick = () => {
  const body = th.closest("table").tBodies[0], dir = th.dataset.dir === "up" ? -1 : 1;
  th.dataset.dir = dir > 0 ? "up" : "down";
  const key = row => { const c = row.cells[col];
    return c.dataset.sort !== undefined ? Number(c.dataset.sort) : c.textContent.trim().toLowerCase(); };
  const blank = v => v === "" || v === "\u2014" || Number.isNaN(v);
  [...body.rows].sort((a, b) => { const x = key(a), y = key(b);
    if (blank(x) || blank(y)) return blank(x) - blank(y);
    return dir * (x < y ? -1 : x > y ? 1 : 0); }).forEach(row => body.appendChild(row));
});"""


def page(title: str, body: str, notes: list[str], script: str = "") -> str:
    note_html = ("<div class=\"notes\">" + "".join(f"<p>{escape(n)}</p>" for n in notes) + "</div>"
                 if notes else "")
    js = f"<script>{script}</script>" if script else ""
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}'
            f"</title><style>{CSS}</style></head><body><h1>{escape(title)}</h1>{note_html}{body}{js}"
            "</body></html>\n")


# --- the run page ------------------------------------------------------------------------------------

def curves_html(rows: list[dict]) -> str:
    eval_keys = sorted({k for row in rows for k in row if k.startswith("eval/")})
    charts = [svg_line_chart({k: series(rows, k) for k in LOSSES}, "losses"),
              svg_line_chart({THROUGHPUT: series(rows, THROUGHPUT)}, "throughput (clips/s)")]
    charts += [svg_line_chart({key[5:]: series(rows, key)}, key) for key in eval_keys]
    return f'<div class="charts">{"".join(charts)}</div>'


def samples_html(run_dir: Path, out_dir: Path) -> str:
    found = sample_files(run_dir)
    if not found:
        return empty("no samples yet")
    figures = []
    for step, files in found.items():
        if "mp4" not in files:
            continue
        still = files.get("gif") or files.get("png")
        fallback = f'<img src="{href(still, out_dir)}" alt="step {step}">' if still else ""
        # With the PNG grid as poster nothing is fetched until play: a long run has many grids.
        poster = (f'preload="none" poster="{href(files["png"], out_dir)}"' if "png" in files
                  else 'preload="metadata"')
        figures.append(f'<figure><video controls loop muted {poster}><source src="'
                       f'{href(files["mp4"], out_dir)}" type="video/mp4">{fallback}</video>'
                       f"<figcaption>step {step}</figcaption></figure>")
    parts = [f'<div class="samples">{"".join(figures)}</div>' if figures else empty("no MP4 samples")]
    stills = [(step, files.get("gif") or files.get("png")) for step, files in found.items()
              if files.keys() & {"gif", "png"}]
    if stills:
        step, path = stills[-1]
        parts.append(f'<figure class="latest"><img src="{href(path, out_dir)}" alt="latest samples">'
                     f"<figcaption>latest grid ({path.suffix[1:].upper()}), step {step}</figcaption>"
                     "</figure>")
    return "".join(parts)


def eval_html(rows: list[dict], evaluated: dict | None) -> str:
    during = {k[5:]: v for k, v in latest_values(rows, "eval/").items()}
    after = (evaluated or {}).get("metrics") or {}
    after = {k.removeprefix("eval/"): v for k, v in after.items()} if isinstance(after, dict) else {}
    if not during and not after:
        return empty("no evaluation yet")
    lines = [[td(name), td(during[name][0]) if name in during else td(None),
              td(during[name][1]) if name in during else td(None), td(after.get(name))]
             for name in sorted(during.keys() | after.keys())]
    html = table(["metric", "during training", "at step", "vidgan evaluate (eval.json)"], lines,
                 "eval-table")
    protocol = (evaluated or {}).get("protocol")
    if protocol:
        html += f"<p>eval.json protocol: <code>{escape(json.dumps(protocol, sort_keys=True))}</code></p>"
    return html


def summary_html(summary: dict | None, run_dir: Path, out_dir: Path) -> str:
    if summary is None:
        return empty("no summary.json yet (the run is in progress or was interrupted)")
    best = summary.get("best") if isinstance(summary.get("best"), dict) else None
    lines = [["status", fmt(summary.get("status"))], ["step", fmt(summary.get("step"))],
             ["seconds", fmt(summary.get("seconds"))], ["steps/s", fmt(summary.get("steps_per_s"))]]
    if best:
        lines.append(["best", f"{fmt(best.get('metric'))} = {fmt(best.get('value'))}"])
    if summary.get("error"):
        lines.append(["error", f'<span class="failed">{fmt(summary["error"])}</span>'])
    final = summary.get("final") if isinstance(summary.get("final"), dict) else {}
    lines += [[f"final {escape(k)}", fmt(v)] for k, v in final.items()
              if is_number(v) and k != "step"]
    ckpts = [Path(p).name for p in summary.get("checkpoints") or []]
    if ckpts:
        links = (f'<a href="{href(run_dir / "checkpoints" / n, out_dir)}">{escape(n)}</a>' for n in ckpts)
        lines.append(["checkpoints", " ".join(links)])
    return table(None, [[f"<th>{escape(k)}</th>", f"<td>{v}</td>"] for k, v in lines],
                 "summary-table")


def render_run(run_dir: Path, out_dir: Path | None = None) -> str:
    """The HTML page of one run; media links are relative to ``out_dir`` (default: the run)."""
    out_dir = run_dir if out_dir is None else out_dir
    notes: list[str] = []
    rows, bad = read_metrics(run_dir / "metrics.jsonl")
    if bad:
        notes.append(f"skipped {bad} malformed line(s) in metrics.jsonl")
    summary = read_json(run_dir / "summary.json", notes)
    evaluated = read_json(run_dir / "eval.json", notes)
    config = run_dir / ".hydra" / "config.yaml"
    overrides = read_overrides(run_dir)
    config_html = (f"<pre>{escape(config.read_text(encoding='utf-8', errors='replace'))}</pre>"
                   if config.is_file() else empty("no .hydra/config.yaml"))
    if overrides:
        config_html = ("<p>overrides: " + " ".join(f"<code>{escape(o)}</code>" for o in overrides)
                       + "</p>" + config_html)
    body = [section("summary", summary_html(summary, run_dir, out_dir)),
            section("curves", curves_html(rows) if rows else empty("no metrics yet")),
            section("samples", samples_html(run_dir, out_dir)),
            section("evaluation", eval_html(rows, evaluated)),
            section("config", config_html)]
    return page(f"vidgan run {run_dir}", "".join(body), notes)


# --- the sweep page ----------------------------------------------------------------------------------

def job_row(job: Path, metric_keys: list[str], rows: list[dict], summary: dict | None,
            out_dir: Path) -> list[str]:
    summary = summary or {}
    status = summary.get("status") or "no summary (running or interrupted)"
    final = summary.get("final") if isinstance(summary.get("final"), dict) else None
    if final is None:
        final = {k: v for k, (v, _) in latest_values(rows).items()}
    error = f'<br><small>{fmt(summary["error"])}</small>' if summary.get("error") else ""
    best = summary.get("best") if isinstance(summary.get("best"), dict) else {}
    target = job / "report.html" if (job / "report.html").is_file() else job
    return [td(int(job.name) if job.name.isdigit() else job.name),
            td(" ".join(f"<code>{escape(o)}</code>" for o in read_overrides(job)), raw=True),
            f'<td class="{escape(str(status))}">{fmt(status)}{error}</td>',
            td(summary.get("step", rows[-1]["step"] if rows else None)),
            *(td(final.get(key)) for key in metric_keys), td(best.get("value")),
            td(svg_sparkline({k: series(rows, k) for k in LOSSES}), raw=True),
            f'<td><a href="{href(target, out_dir)}">{escape(job.name)}/</a></td>']


def render_sweep(sweep_dir: Path, out_dir: Path | None = None) -> str:
    """The comparison page of a multirun: one row per job folder."""
    out_dir = sweep_dir if out_dir is None else out_dir
    notes: list[str] = []
    jobs = job_dirs(sweep_dir)
    data = []
    for job in jobs:
        rows, bad = read_metrics(job / "metrics.jsonl")
        if bad:
            notes.append(f"job {job.name}: skipped {bad} malformed line(s) in metrics.jsonl")
        data.append((job, rows, read_json(job / "summary.json", notes)))
    eval_keys = sorted({k for _, rows, _ in data for k in latest_values(rows, "eval/")})
    metric_keys = [*LOSSES, THROUGHPUT, *eval_keys]
    header = ["job", "overrides", "status", "step", *(k.removeprefix("eval/") for k in metric_keys),
              "best", "d_loss / g_loss", "run"]
    body = [job_row(job, metric_keys, rows, summary, out_dir) for job, rows, summary in data]
    html = sweep_overrides(sweep_dir)
    if (sweep_dir / "summary.csv").is_file():
        html += f'<p><a href="{href(sweep_dir / "summary.csv", out_dir)}">summary.csv</a></p>'
    html += table(header, body, "jobs", sortable=True) if jobs else empty("no job folders yet")
    return page(f"vidgan sweep {sweep_dir} ({len(jobs)} jobs)", section("jobs", html), notes,
                SORT_JS)


def sweep_overrides(sweep_dir: Path) -> str:
    try:
        spec = yaml.safe_load((sweep_dir / "multirun.yaml").read_text(encoding="utf-8"))
        task = spec["hydra"]["overrides"]["task"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return ""
    return "<p>sweep: " + " ".join(f"<code>{escape(str(o))}</code>" for o in task or []) + "</p>"


# --- the command -------------------------------------------------------------------------------------

def write_atomic(path: Path, text: str) -> None:
    """A reader (a browser refreshing the page) never sees a half-written file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="vidgan report",
        description="Write a self-contained HTML report (curves, samples, evals, config) of a run, "
                    "or a comparison table of a multirun sweep.")
    parser.add_argument("path", type=Path, metavar="RUN_OR_SWEEP_DIR")
    parser.add_argument("-o", "--output", type=Path, metavar="OUT.html",
                        help="where to write the page (default: RUN_OR_SWEEP_DIR/report.html)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        kind = folder_kind(args.path)
    except ReportError as err:
        parser.error(str(err))
    out = args.output or args.path / "report.html"
    if out.is_dir():
        out = out / "report.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    render = render_run if kind == "run" else render_sweep
    try:
        write_atomic(out, render(args.path, out.parent))
    except OSError as err:
        parser.exit(1, f"vidgan report: error: cannot write {out}: {err}\n")
    print(f"wrote {out}")
