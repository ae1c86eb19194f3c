"""``vidgan evaluate ckpt=PATH [metrics=[shapes,fvd,kvd]] [+dataset.KEY=VALUE ...]``.

The real clips come from the dataset the checkpoint was trained on, rebuilt from the config stored
inside it; ``+dataset.KEY=VALUE`` overrides single keys of that node (e.g. ``+dataset.seed=1`` for
clips the generator never saw), and ``+dataset._target_=...`` with all its arguments replaces it.
Prints a table and writes ``eval.json`` (the numbers and the protocol they were measured with) into
the checkpoint's run folder, or ``out_dir=``.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("vidgan_cli.evaluate")


@dataclass
class EvaluateConfig:
    ckpt: Any = None                   # PATH to a checkpoint (required)
    metrics: list[str] = field(default_factory=lambda: ["shapes"])   # shapes | fvd | kvd
    num_samples: int = 512             # generated clips; as many real clips (twice for shapes' floor)
    batch_size: int = 32
    seed: int = 0                      # conditions, generator noise and the real-clip draw
    device: str = "auto"               # auto | cpu | cuda | cuda:N
    ema: bool = True                   # evaluate G_ema (false: the raw G)
    i3d_path: Any = None               # i3d_pretrained_400.pt for fvd/kvd (else $VIDGAN_I3D_PATH)
    cache_dir: Any = "~/.cache/vidgan/metrics"   # real-feature cache (null: no cache)
    out_dir: Any = None                # where eval.json goes (default: the checkpoint's run folder)
    dataset: dict[str, Any] = field(default_factory=dict)   # overrides of the checkpoint's dataset


ConfigStore.instance().store(name="evaluate_schema", node=EvaluateConfig)


def dataset_node(config_yaml: str, overrides: dict) -> DictConfig:
    """The checkpoint's ``dataset`` node with ``overrides`` merged in (replaced if ``_target_`` differs)."""
    from vidgan_cli.config import ConfigError, check_target_node, check_trusted_targets

    stored = OmegaConf.create(config_yaml or "{}")
    node = stored.get("dataset") if isinstance(stored, DictConfig) else None
    overrides = OmegaConf.create(dict(overrides or {}))
    if node is None and "_target_" not in overrides:
        raise ConfigError("the checkpoint's config has no dataset node; give the whole dataset with "
                          "+dataset._target_=... and its arguments")
    if node is None or overrides.get("_target_", node.get("_target_")) != node.get("_target_"):
        node = overrides
    else:
        node = OmegaConf.merge(node, overrides)
    check_trusted_targets(node, "dataset")
    check_target_node(node, "dataset")
    return node


def run_folder(ckpt_path: Path) -> Path:
    """``outputs/<date>/<time>`` for ``.../checkpoints/last.ckpt``; the file's folder otherwise."""
    parent = ckpt_path.resolve().parent
    return parent.parent if parent.name == "checkpoints" else parent


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def evaluate(cfg: DictConfig) -> dict:
    """Compute the metrics of ``cfg.ckpt``, write ``eval.json``; return its content."""
    from hydra.utils import instantiate

    from vidgan_cli import __version__
    from vidgan_cli.config import ConfigError
    from vidgan_cli.metrics import run_metrics
    from vidgan_cli.metrics.compute import check_names, resolve_device
    from vidgan_cli.train.checkpoint import build_generator, load_checkpoint

    if not cfg.ckpt:
        raise ConfigError("evaluate needs ckpt=PATH, e.g. ckpt=outputs/<date>/<time>/checkpoints/last.ckpt")
    names = check_names(list(cfg.metrics))
    for key in ("num_samples", "batch_size"):
        if cfg[key] < (2 if key == "num_samples" else 1):
            raise ConfigError(f"{key} must be >= {2 if key == 'num_samples' else 1}; got {cfg[key]}")
    ckpt_path = Path(cfg.ckpt).expanduser()
    ckpt = load_checkpoint(ckpt_path)
    node = dataset_node(ckpt.get("config_yaml", ""), OmegaConf.to_container(cfg.dataset))
    dataset = instantiate(node)
    device = resolve_device(cfg.device)
    G = build_generator(ckpt, ema=cfg.ema).to(device)
    result = run_metrics(G, dataset=dataset, names=names, num_samples=cfg.num_samples,
                         batch_size=cfg.batch_size, device=device, seed=cfg.seed,
                         i3d_path=cfg.i3d_path, cache_dir=cfg.cache_dir)
    report = {
        "checkpoint": str(ckpt_path.resolve()), "step": ckpt.get("step"), "ema": bool(cfg.ema),
        "metrics": {k: _finite_or_none(v) for k, v in result.values.items()},
        "protocol": {**result.manifest, "dataset_config": OmegaConf.to_container(node)},
        "vidgan_version": __version__,
    }
    out_dir = Path(cfg.out_dir).expanduser() if cfg.out_dir else run_folder(ckpt_path)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "eval.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    report["path"] = str(path)
    return report


# Which real-clip reference goes beside which number in the table.
_REFERENCE = {"shapes/fd": "shapes/fd_floor", "shapes/class_acc": "shapes/class_acc_real",
              "shapes/velocity_residual": "shapes/velocity_residual_real",
              "shapes/persistence": "shapes/persistence_real", "shapes/object_found": "shapes/object_found_real"}


def print_table(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    results, proto = report["metrics"], report["protocol"]
    table = Table(title=f"vidgan evaluate: step {report['step']} ({'G_ema' if report['ema'] else 'G'})")
    for column in ("metric", "generated", "real reference"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    shown = set()
    for name, value in results.items():
        if name in shown or name in _REFERENCE.values():
            continue
        ref = _REFERENCE.get(name)
        table.add_row(name, _fmt(value), _fmt(results.get(ref)) if ref else "")
        shown.update({name, ref})
    console = Console()
    console.print(table)
    console.print(f"{proto['fake_clips']} generated vs {proto['real_clips']} real clips, "
                  f"{proto['frames']} frames at {proto['resolution']} px; {proto['conditions']}")
    console.print("real reference: the same number for real clips (for shapes/fd: two disjoint real sets)")
    console.print(f"wrote {report['path']}")


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.4g}"


@hydra.main(config_path="pkg://vidgan_cli.conf", config_name="evaluate", version_base="1.3")
def main(cfg: DictConfig) -> dict | None:
    try:
        report = evaluate(cfg)
    except (FileNotFoundError, ValueError) as err:   # ConfigError is a ValueError
        log.error("vidgan evaluate: %s", err)
        sys.exit(2)
    print_table(report)
    return report["metrics"]
