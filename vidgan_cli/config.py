"""Structured configs (types and defaults) and the cross-field checks that run before training.

Hydra composes ``conf/*.yaml`` onto the dataclasses registered here, so a wrong type or an unknown
key fails at compose time.  Groups whose keys depend on the chosen option (model, loss, dataset,
optimizer, augment) are ``_target_`` nodes: :func:`check_target_node` compares their keys with the
target's signature, so a misspelt model argument also fails before anything is allocated.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
LR_DECAYS = ("constant", "linear", "cosine")
NAN_POLICIES = ("stop", "skip")
# Only these may be instantiated from a checkpoint's stored config (a checkpoint never runs foreign code).
TRUSTED_TARGET_PREFIXES = ("vidgan_cli.", "torch.optim.")
HYDRA_KEYS = {"_target_", "_partial_", "_recursive_", "_convert_", "_args_"}


class ConfigError(ValueError):
    """A config value is wrong; the message names the key and what is allowed."""


@dataclass
class TrainerConfig:
    max_steps: int = 20_000            # generator steps (each preceded by loss.n_critic D steps)
    batch_size: int = 16               # clips per step (per process under torchrun)
    device: str = "auto"               # auto | cpu | cuda | cuda:N
    precision: str = "auto"            # auto | fp32 | bf16 | fp16 (fp16: CUDA only, with a grad scaler);
    #                                    auto: bf16 where the hardware has native bf16, else fp32
    compile: bool = False              # torch.compile G and D
    channels_last: bool = True         # channels_last_3d memory format for 3D convs
    num_workers: int = 0               # DataLoader worker processes
    retain_heap: bool = True           # CPU: keep freed memory in the heap (no page faults per step)
    reuse_fakes: bool = True           # the G step scores the last D step's fakes (one G forward a step)
    log_every: int = 50                # steps between jsonl lines / console updates (host syncs)
    sample_every: int = 500            # steps between sample grids (0: only at the end)
    sample_columns: int = 4            # clips per row of the sample grid (one row per class)
    save_every: int = 500              # steps between writes of checkpoints/last.ckpt
    snapshot_every: int = 0            # steps between kept checkpoints/step_XXXXXXX.ckpt (0: none)
    ema_half_life_clips: float = 10_000.0  # G_ema half-life counted in clips seen
    ema_rampup: float = 0.05           # half-life <= rampup * clips seen so far (0: no ramp-up)
    eval_every: int = 0                # steps between evaluations of G_ema (0: never)
    eval_metrics: list[str] = field(default_factory=lambda: ["shapes"])
    eval_num_samples: int = 256
    eval_i3d_path: Any = None          # i3d_pretrained_400.pt, for eval_metrics fvd/kvd
    best_metric: str = ""              # metric that picks best.ckpt, e.g. shapes/fd ("" = none)
    best_mode: str = "min"             # min | max
    nan_policy: str = "stop"           # stop | skip (skip a step whose loss is not finite)
    fps: int = 8                       # frame rate of sample videos


@dataclass
class LoggerConfig:
    tensorboard: bool = False          # also write TensorBoard event files (extra [tensorboard])


@dataclass
class TrainConfig:
    model: Any = MISSING
    loss: Any = MISSING
    optimizer: Any = MISSING
    dataset: Any = MISSING
    augment: Any = MISSING
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    seed: int = 0
    resume: Any = None                 # null | auto | PATH to a checkpoint
    init_from: Any = None              # PATH: fine-tune from another run's weights


@dataclass
class GenerateConfig:
    ckpt: Any = None                   # PATH to a checkpoint (required)
    condition: Any = "all"             # class name, id, list of them, or all
    num_videos: int = 8                # clips per condition
    frames: Any = None                 # clip length (default: as trained)
    fps: int = 8
    seed: int = 0
    out_dir: Any = None                # default: the Hydra run folder of this call
    batch_size: int = 16
    device: str = "auto"
    ema: bool = True                   # sample from G_ema (false: the raw G)
    grid: bool = True                  # also write a grid of all clips (mp4 + gif + png)


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    cs.store(name="generate_schema", node=GenerateConfig)


# --------------------------------------------------------------------------------------------------
# checks


def _import_target(path: str):
    module_name, _, attr = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as err:
        raise ConfigError(f"_target_ {path!r} cannot be imported: {err}") from None


def check_target_node(node: DictConfig, where: str) -> None:
    """Check that every key of a ``_target_`` node is an argument its target accepts."""
    target = _import_target(node._target_)
    try:
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return  # builtins without a signature: the constructor checks for itself
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    allowed = {n for n, p in params.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL}
    unknown = sorted(set(node.keys()) - HYDRA_KEYS - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown} for {node._target_}; "
                          f"allowed: {sorted(allowed - {'self', 'params'})}")


def check_trusted_targets(cfg: Any, where: str = "config") -> None:
    """Refuse any ``_target_`` outside vidgan_cli / torch.optim (used on configs read from checkpoints)."""
    if isinstance(cfg, DictConfig):
        target = cfg.get("_target_") if "_target_" in cfg else None
        if target is not None and not str(target).startswith(TRUSTED_TARGET_PREFIXES):
            raise ConfigError(f"{where}._target_={target!r} is not allowed from a checkpoint; only "
                              f"targets under {', '.join(TRUSTED_TARGET_PREFIXES)} are instantiated")
        for key in cfg.keys():
            check_trusted_targets(cfg._get_node(key), f"{where}.{key}")
    elif isinstance(cfg, ListConfig):
        for i, item in enumerate(cfg):
            check_trusted_targets(item, f"{where}[{i}]")


def _choice(value: Any, allowed: tuple[str, ...], key: str) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} is not one of {', '.join(allowed)}")


def _positive(value: Any, key: str, allow_zero: bool = False) -> None:
    ok = value >= 0 if allow_zero else value > 0
    if not ok:
        raise ConfigError(f"{key} must be {'>= 0' if allow_zero else '> 0'}; got {value}")


def check_model_sizes(model_cfg: DictConfig, frames: int, resolution: int) -> None:
    for part in ("generator", "discriminator"):
        cls = _import_target(model_cfg[part]._target_)
        if hasattr(cls, "check_sizes"):
            try:
                cls.check_sizes(frames, resolution)
            except ValueError as err:
                raise ConfigError(f"model.{part}: {err}") from None


def validate_train(cfg: DictConfig) -> None:
    """Every check that can run on the config alone, before any tensor is allocated."""
    t = cfg.trainer
    _choice(t.precision, PRECISIONS, "trainer.precision")
    _choice(t.nan_policy, NAN_POLICIES, "trainer.nan_policy")
    _choice(t.best_mode, ("min", "max"), "trainer.best_mode")
    if not (t.device in ("auto", "cpu", "cuda") or str(t.device).startswith("cuda:")):
        raise ConfigError(f"trainer.device={t.device!r} is not one of auto, cpu, cuda, cuda:N")
    for key in ("max_steps", "batch_size", "log_every", "sample_columns", "fps"):
        _positive(t[key], f"trainer.{key}")
    for key in ("sample_every", "save_every", "snapshot_every", "eval_every", "num_workers",
                "ema_rampup"):
        _positive(t[key], f"trainer.{key}", allow_zero=True)
    _positive(t.ema_half_life_clips, "trainer.ema_half_life_clips", allow_zero=True)
    if t.best_metric and not t.eval_every:
        raise ConfigError("trainer.best_metric needs trainer.eval_every > 0 (best.ckpt is chosen "
                          "by evaluating during training)")

    opt = cfg.optimizer
    for key in ("lr", "lr_d"):
        _positive(opt[key], f"optimizer.{key}")
    _choice(opt.decay, LR_DECAYS, "optimizer.decay")
    _positive(opt.warmup_steps, "optimizer.warmup_steps", allow_zero=True)

    data = cfg.dataset
    for key in ("frames", "resolution"):
        _positive(data[key], f"dataset.{key}")
    if data.num_classes is not None:
        _positive(data.num_classes, "dataset.num_classes", allow_zero=True)
    if cfg.resume is not None and cfg.init_from is not None:
        raise ConfigError("resume= continues a run and init_from= starts a new one from weights; "
                          "give only one of them")

    for group in ("dataset", "loss", "augment"):
        check_target_node(cfg[group], group)
    for part in ("generator", "discriminator"):
        check_target_node(cfg.model[part], f"model.{part}")
    for part in ("generator", "discriminator"):
        check_target_node(cfg.optimizer[part], f"optimizer.{part}")
    if data.num_classes is not None:  # null: the dataset decides; checked again once it has
        check_model_sizes(cfg.model, data.frames, data.resolution)


def to_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg, resolve=True)
