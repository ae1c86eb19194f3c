"""``vidgan generate``: sample clips from a checkpoint and write one MP4 per clip plus a grid.

The generator is rebuilt from the checkpoint alone (class path + constructor arguments + weights,
loaded with ``weights_only=True``); conditions are given by class name or id.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, ListConfig

from vidgan_cli.config import ConfigError, register_configs

log = logging.getLogger("vidgan_cli.generate")
register_configs()


def parse_condition(condition, class_names: list[str]) -> list[int | None]:
    """Class ids for ``condition`` (name, id, list of them, or ``all``); ``[None]`` if unconditional."""
    if not class_names:
        if condition in (None, "all", "none"):
            return [None]
        raise ConfigError(f"condition={condition!r}: this checkpoint is unconditional; "
                          "leave condition out (or use condition=all)")
    if condition in (None, "all"):
        return list(range(len(class_names)))
    items = list(condition) if isinstance(condition, (list, tuple, ListConfig)) else [condition]
    ids = []
    for item in items:
        if isinstance(item, int) and not isinstance(item, bool) and 0 <= item < len(class_names):
            ids.append(item)
        elif isinstance(item, str) and item in class_names:
            ids.append(class_names.index(item))
        else:
            choices = ", ".join(f"{i}={name}" for i, name in enumerate(class_names))
            raise ConfigError(f"unknown condition {item!r}; this checkpoint's classes are {choices} "
                              "(give a name, an id, a list, or all)")
    return ids


def save_grid(videos, stem: Path, *, nrow: int, labels: list[str] | None, fps: int) -> list[Path]:
    """Write ``videos`` (float [N, 3, T, H, W] in [-1, 1]) as ``stem``.mp4 and .gif (a grid of
    clips, ``nrow`` per row, ``labels`` one per row) and ``stem``.png (a storyboard: one clip per
    row, its frames side by side, each row labelled)."""
    from vidgan_cli.video_io import make_grid, to_uint8, write_clip, write_png_strip
    clips = to_uint8(videos)
    grid = make_grid(clips, nrow=nrow, labels=labels)
    paths = [write_clip(stem.with_suffix(suffix), grid, fps) for suffix in (".mp4", ".gif")]
    clip_labels = [labels[i // nrow] for i in range(len(clips))] if labels else None
    return paths + [write_png_strip(stem.with_suffix(".png"), clips, padding=2, labels=clip_labels)]


def generate(cfg: DictConfig, out_dir: Path) -> list[Path]:
    import torch
    from tqdm import tqdm

    from vidgan_cli.models.blocks import to_channels_last_3d
    from vidgan_cli.train.checkpoint import build_generator, load_checkpoint
    from vidgan_cli.train.distributed import resolve_device
    from vidgan_cli.video_io import to_uint8, write_video

    if not cfg.ckpt:
        raise ConfigError("generate needs ckpt=PATH, e.g. "
                          "ckpt=outputs/<date>/<time>/checkpoints/last.ckpt")
    for key in ("num_videos", "fps", "batch_size"):
        if cfg[key] <= 0:
            raise ConfigError(f"{key} must be > 0; got {cfg[key]}")
    ckpt = load_checkpoint(cfg.ckpt)
    class_names = list(ckpt["class_names"])
    ids = parse_condition(cfg.condition, class_names)
    device = resolve_device(cfg.device)
    G = to_channels_last_3d(build_generator(ckpt, ema=cfg.ema).to(device))
    labels = [i for i in ids for _ in range(cfg.num_videos)]
    names = [class_names[i] if i is not None else "clip" for i in labels]
    targets = [out_dir / f"{name}_{k % cfg.num_videos:03d}.mp4" for k, name in enumerate(names)]
    grid_stem = out_dir / "grid"
    existing = [p for p in targets + [grid_stem.with_suffix(".mp4")] if p.exists()]
    if existing:
        raise ConfigError(f"{existing[0]} already exists; choose another out_dir "
                          "(generate never overwrites earlier samples)")

    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    videos = []
    starts = range(0, len(labels), cfg.batch_size)
    with torch.no_grad():
        for start in tqdm(starts, desc="sampling", unit="batch", disable=not sys.stderr.isatty()):
            chunk = labels[start:start + cfg.batch_size]
            y = None if chunk[0] is None else torch.tensor(chunk, device=device)
            try:
                clips = G.sample(len(chunk), y, generator=gen, frames=cfg.frames)
            except ValueError as err:  # e.g. a clip length this model cannot generate
                raise ConfigError(f"frames={cfg.frames}: {err}") from None
            videos.append(clips.float().cpu())
    videos = torch.cat(videos)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [write_video(path, clip, cfg.fps) for path, clip in zip(targets, to_uint8(videos), strict=True)]
    if cfg.grid:
        row_labels = [class_names[i] for i in ids] if class_names else None
        written += save_grid(videos, grid_stem, nrow=cfg.num_videos, labels=row_labels, fps=cfg.fps)
    log.info("wrote %d clips (%s) to %s", len(targets), ", ".join(sorted(set(names))), out_dir)
    return written


@hydra.main(config_path="pkg://vidgan_cli.conf", config_name="generate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    out_dir = Path(cfg.out_dir).expanduser() if cfg.out_dir else \
        Path(HydraConfig.get().runtime.output_dir)
    try:
        generate(cfg, out_dir)
    except (ConfigError, FileNotFoundError, ValueError) as err:
        log.error("vidgan generate: %s", err)
        sys.exit(2)
