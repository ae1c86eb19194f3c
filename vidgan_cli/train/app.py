"""``vidgan train``: the Hydra app that checks the config, picks the run folder and runs the Trainer.

It returns the value of ``trainer.best_metric`` (or None), so Hydra sweepers can optimise it.  In a
multirun a failing job is recorded as failed (``summary.json``) and the sweep goes on.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from vidgan_cli.config import ConfigError, register_configs, validate_train
from vidgan_cli.train.trainer import CheckpointWriteError, Trainer, TrainingDiverged

log = logging.getLogger("vidgan_cli.train")
register_configs()


def output_root(run_dir: Path) -> Path:
    """Where ``resume=auto`` looks for runs: the top folder of the run dir (``outputs/`` by default)."""
    try:
        relative = run_dir.resolve().relative_to(Path.cwd().resolve())
        return Path.cwd() / relative.parts[0]
    except (ValueError, IndexError):
        return run_dir.parent


def resolve_resume(cfg: DictConfig, run_dir: Path) -> Path | None:
    """The checkpoint to continue from: ``resume=PATH``, or for ``auto`` this folder's own
    ``last.ckpt`` (a fixed run dir requeued on a cluster), else the newest run under the output root."""
    from vidgan_cli.train.checkpoint import find_latest
    if cfg.resume is None:
        return None
    if cfg.resume != "auto":
        path = Path(cfg.resume).expanduser()
        if not path.is_file():
            raise ConfigError(f"resume={cfg.resume}: no such checkpoint file (use resume=auto to "
                              "continue the latest run under the output folder)")
        return path
    own = run_dir / "checkpoints" / "last.ckpt"
    found = own if own.is_file() else find_latest(output_root(run_dir))
    if found is None:
        log.info("resume=auto: no run with checkpoints/last.ckpt under %s; starting a new run",
                 output_root(run_dir))
    return found


def choose_run(cfg: DictConfig, run_dir: Path) -> tuple[Path, Path | None]:
    """(folder the run writes to, checkpoint to resume from or None)."""
    resume_from = resolve_resume(cfg, run_dir)
    if resume_from is not None:
        # Continue in the resumed run's own folder so its history stays in one place.
        return resume_from.parent.parent, resume_from
    if (run_dir / "checkpoints" / "last.ckpt").exists():
        raise ConfigError(f"{run_dir} already holds a run (checkpoints/last.ckpt); pass resume=auto "
                          "to continue it or choose another hydra.run.dir")
    return run_dir, None


def link_resumed(hydra_dir: Path, run_dir: Path, resume_from: Path) -> None:
    """A resumed run goes on in its own folder, while this invocation's config (``.hydra/``) and
    console log (``train.log``) stay in the folder Hydra made for it: each folder names the other."""
    (hydra_dir / "RESUMED_RUN.txt").write_text(
        f"This invocation continued the run in {run_dir} from {resume_from}.\n"
        "Its checkpoints, metrics and samples are written there; this folder keeps the invocation's "
        "config (.hydra/) and console log (train.log).\n")
    with open(run_dir / "resumes.log", "a") as f:
        f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')}  resumed from {resume_from.name} by the "
                f"invocation in {hydra_dir} (its .hydra/ and train.log)\n")
    log.info("resuming %s in its own folder; this invocation's log stays in %s", run_dir,
             hydra_dir / "train.log")


def agree_with_rank0(choice, own_dir: Path, info) -> tuple:
    """Under torchrun every rank takes rank 0's run folder and checkpoint (their clocks, and so
    their Hydra folders, may differ); a non-zero rank removes the empty folder Hydra made for it."""
    import torch.distributed as dist
    shared = [choice if info.is_main else None]
    dist.broadcast_object_list(shared, src=0)
    if isinstance(shared[0], Exception):  # rank 0 refused: every rank stops with its message
        raise shared[0]
    if not info.is_main and shared[0][0] != own_dir:
        try:
            own_dir.rmdir()
        except OSError:
            pass
    return shared[0]


def run(cfg: DictConfig) -> float | None:
    from vidgan_cli.train import distributed
    validate_train(cfg)
    hydra_dir = Path(HydraConfig.get().runtime.output_dir)
    info, _ = distributed.setup(cfg.trainer.device)
    choice = None
    if info.is_main:
        try:
            choice = choose_run(cfg, hydra_dir)
        except ConfigError as err:
            if not info.enabled:
                raise
            choice = err
    run_dir, resume_from = agree_with_rank0(choice, hydra_dir, info) if info.enabled else choice
    if info.is_main and resume_from is not None and run_dir.resolve() != hydra_dir.resolve():
        link_resumed(hydra_dir, run_dir, resume_from)
    summary = Trainer(cfg, run_dir, resume_from=resume_from).fit()
    best = (summary or {}).get("best") or {}
    return best.get("value")


@hydra.main(config_path="pkg://vidgan_cli.conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        return run(cfg)
    except (ConfigError, FileNotFoundError) as err:
        if multirun:
            return _record_failure(err)
        log.error("vidgan train: %s", err)  # console (stderr) and train.log
        sys.exit(2)
    except (CheckpointWriteError, TrainingDiverged, OSError) as err:
        if multirun:
            return _record_failure(err)
        log.error("vidgan train: %s", err)
        sys.exit(1)
    except Exception as err:
        if multirun:
            return _record_failure(err)
        raise


def _record_failure(err: BaseException) -> float:
    import json
    log.exception("job failed: %s", err)
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    (run_dir / "summary.json").write_text(json.dumps(
        {"status": "failed", "error": f"{type(err).__name__}: {err}", "run_dir": str(run_dir)},
        indent=2))
    return float("nan")
