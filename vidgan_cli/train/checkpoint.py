"""Checkpoints: one ``torch.save`` file of tensors and plain values, written atomically.

The file loads with ``torch.load(weights_only=True)``: nothing in it is code.  The networks are
rebuilt from their class path and constructor arguments (``G_class``/``G_config``), and only classes
inside ``vidgan_cli.`` are accepted, so loading a checkpoint never runs foreign code.
"""

from __future__ import annotations

import glob
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vidgan_cli import __version__
from vidgan_cli.config import TRUSTED_TARGET_PREFIXES, ConfigError, _import_target

REQUIRED_KEYS = ("G", "G_ema", "D", "step", "G_class", "G_config", "config_yaml", "class_names")


def class_path(module: nn.Module) -> str:
    cls = type(module)
    return f"{cls.__module__}.{cls.__qualname__}"


def unwrap(module: nn.Module) -> nn.Module:
    """The plain module under DDP and torch.compile wrappers (its state dict has no prefixes)."""
    module = getattr(module, "module", module)      # DistributedDataParallel
    return getattr(module, "_orig_mod", module)     # torch.compile


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temp file in the same folder, fsync, then ``os.replace``.

    A crash at any point leaves either the old file or the new one, never a truncated one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load and sanity-check a checkpoint; errors say what is wrong with which file."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path} (expected a .ckpt file written by "
                                "`vidgan train`, e.g. outputs/<date>/<time>/checkpoints/last.ckpt)")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated, not a torch file, or holds code objects
        raise ValueError(f"{path} is not a readable vidgan checkpoint: {err}") from None
    missing = [k for k in REQUIRED_KEYS if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise ValueError(f"{path} is not a vidgan checkpoint: missing {missing}")
    return ckpt


def build_module(class_name: str, config: dict) -> nn.Module:
    if not class_name.startswith(TRUSTED_TARGET_PREFIXES[0]):
        raise ConfigError(f"checkpoint names class {class_name!r}; only classes under "
                          f"{TRUSTED_TARGET_PREFIXES[0]} are built from a checkpoint")
    return _import_target(class_name)(**config)


def build_generator(ckpt: dict, ema: bool = True) -> nn.Module:
    """The generator of a checkpoint (G_ema by default), in eval mode on the CPU."""
    G = build_module(ckpt["G_class"], ckpt["G_config"])
    G.load_state_dict(ckpt["G_ema" if ema else "G"])
    return G.eval().requires_grad_(False)


def find_latest(root: str | os.PathLike) -> Path | None:
    """The newest ``last.ckpt`` below ``root`` (single runs and multirun jobs), or None."""
    found = glob.glob(os.path.join(str(root), "**", "checkpoints", "last.ckpt"), recursive=True)
    return Path(max(found, key=os.path.getmtime)) if found else None


def load_matching(module: nn.Module, state: dict[str, torch.Tensor]) -> tuple[list[str], list[str]]:
    """Copy the tensors whose names and shapes match; return (loaded, skipped-with-reason)."""
    own = module.state_dict()
    loaded, skipped = [], []
    for name, tensor in state.items():
        if name not in own:
            skipped.append(f"{name} (not in this model)")
        elif own[name].shape != tensor.shape:
            skipped.append(f"{name} (shape {tuple(tensor.shape)} -> {tuple(own[name].shape)})")
        else:
            own[name].copy_(tensor)
            loaded.append(name)
    skipped += [f"{name} (not in the checkpoint)" for name in own if name not in state]
    return loaded, skipped


def make_checkpoint(*, G, G_ema, D, opt_G, opt_D, sched_G, sched_D, step: int, config_yaml: str,
                    class_names: list[str], extra: dict | None = None) -> dict:
    G, D = unwrap(G), unwrap(D)
    return {
        "G": G.state_dict(), "G_ema": G_ema.state_dict(), "D": D.state_dict(),
        "G_class": class_path(G), "G_config": dict(G.config),
        "D_class": class_path(D), "D_config": dict(D.config),
        "opt_G": opt_G.state_dict(), "opt_D": opt_D.state_dict(),
        "sched_G": sched_G.state_dict(), "sched_D": sched_D.state_dict(),
        "step": step, "rng": rng_state(), "config_yaml": config_yaml,
        "class_names": list(class_names), "version": __version__, **(extra or {}),
    }
