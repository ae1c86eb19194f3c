"""Analytic motion metrics for single-object clips on a black background (the ``shapes`` data).

No network is involved: each frame is segmented by brightness, the object's centroid is tracked, and
two numbers describe how physical the motion is.  Lower is better for both; real ``shapes`` clips are
the reference (values are reported beside the generated ones).

- **velocity residual**: the object moves at constant velocity and bounces off the walls, so away
  from the walls the centroid's second difference ``c[t+1] - 2 c[t] + c[t-1]`` is zero up to
  rasterisation.  The metric is the mean absolute second difference per axis, in units of the frame
  size, over the frame triples whose object stays clear of that axis' walls.  A triple in which some
  frame has no single object counts as a jump of one frame width (1.0).
- **persistence**: coefficient of variation (std / mean over frames) of the object's pixel mass.  A
  frame without a single object has mass 0, so an object that appears in one frame only scores
  ``sqrt(T - 1)``, which is also the value given to clips in which no object is ever found.

A frame "has a single object" when its foreground (max over RGB above ``threshold``) covers between
0.5% and 25% of the frame and is compact: ``2 pi (var_x + var_y) / area <= 3.5`` (1 for a disc, 2.6
for the ring shape; scattered noise scores far higher).  The object fraction of frames is reported too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

THRESHOLD = 127          # uint8 brightness that separates objects from the black background
MIN_AREA, MAX_AREA = 0.005, 0.25   # object area bounds, fractions of the frame
MAX_SPREAD = 3.5         # compactness bound, 2 pi (var_x + var_y) / area
WALL_MARGIN = 0.1        # frame fraction; bounces happen while the edge is this close to a wall
LOST_RESIDUAL = 1.0      # residual of a frame triple in which the object is lost


@dataclass
class Track:
    """Per-frame segmentation of a batch of clips: all tensors ``[B, T]`` (centroids ``[B, T, 2]``)."""

    found: torch.Tensor      # bool: a single compact object is in the frame
    mass: torch.Tensor       # foreground pixels / (H * W), 0 where no object is found
    centroid: torch.Tensor   # (x, y) in units of the frame size
    at_wall: torch.Tensor    # bool [B, T, 2]: the object's extent is within WALL_MARGIN of an x / y wall


def track(clips: torch.Tensor, threshold: int = THRESHOLD) -> Track:
    """Segment and track the object in ``uint8 [B, T, H, W, 3]`` clips."""
    if clips.dtype != torch.uint8 or clips.ndim != 5 or clips.shape[-1] != 3:
        raise ValueError(f"expected uint8 clips [B, T, H, W, 3]; got {clips.dtype} {tuple(clips.shape)}")
    h, w = clips.shape[2:4]
    fg = (clips.amax(dim=-1) > threshold).to(torch.float64)           # [B, T, H, W]
    area = fg.sum(dim=(-2, -1))
    safe = area.clamp(min=1)
    ys = (torch.arange(h, dtype=torch.float64) + 0.5) / h
    xs = (torch.arange(w, dtype=torch.float64) + 0.5) / w
    col, row = fg.sum(dim=-2), fg.sum(dim=-1)                          # [B, T, W], [B, T, H]
    cx, cy = (col * xs).sum(-1) / safe, (row * ys).sum(-1) / safe
    var_px = ((col * (xs * w) ** 2).sum(-1) / safe - (cx * w) ** 2
              + (row * (ys * h) ** 2).sum(-1) / safe - (cy * h) ** 2)
    frac = area / (h * w)
    spread = 2 * math.pi * var_px / safe
    found = (frac >= MIN_AREA) & (frac <= MAX_AREA) & (spread <= MAX_SPREAD)
    x_lo, x_hi = _extent(col > 0, w)
    y_lo, y_hi = _extent(row > 0, h)
    at_wall = torch.stack([(x_lo < WALL_MARGIN) | (x_hi > 1 - WALL_MARGIN),
                           (y_lo < WALL_MARGIN) | (y_hi > 1 - WALL_MARGIN)], dim=-1)
    return Track(found=found, mass=torch.where(found, frac, 0.0),
                 centroid=torch.stack([cx, cy], dim=-1), at_wall=at_wall)


def _extent(occupied: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """First and last occupied pixel along the last axis, as fractions of ``size``."""
    idx = torch.arange(size, dtype=torch.float64)
    lo = torch.where(occupied, idx, float(size)).amin(dim=-1)
    hi = torch.where(occupied, idx, -1.0).amax(dim=-1)
    return lo / size, (hi + 1) / size


def velocity_residual(tr: Track) -> torch.Tensor:
    """Per-clip mean |second difference| of the centroid (frame units) away from walls ``[B]``.

    NaN for a clip with no usable triple (fewer than 3 frames, or the object touches a wall in every
    triple).
    """
    if tr.found.shape[1] < 3:
        return torch.full(tr.found.shape[:1], float("nan"), dtype=torch.float64)
    c = tr.centroid
    accel = (c[:, 2:] - 2 * c[:, 1:-1] + c[:, :-2]).abs()                 # [B, T-2, 2]
    found3 = (tr.found[:, 2:] & tr.found[:, 1:-1] & tr.found[:, :-2]).unsqueeze(-1).expand_as(accel)
    wall3 = tr.at_wall[:, 2:] | tr.at_wall[:, 1:-1] | tr.at_wall[:, :-2]
    residual = torch.where(found3, accel, LOST_RESIDUAL)
    usable = ~(found3 & wall3)
    count = usable.sum(dim=(1, 2))
    total = torch.where(usable, residual, 0.0).sum(dim=(1, 2))
    return torch.where(count > 0, total / count.clamp(min=1), float("nan"))


def persistence(tr: Track) -> torch.Tensor:
    """Per-clip coefficient of variation of the object's mass over frames ``[B]`` (0 = constant)."""
    mass = tr.mass
    frames = mass.shape[1]
    mean, std = mass.mean(dim=1), mass.std(dim=1, correction=0)
    return torch.where(mean > 0, std / mean.clamp(min=1e-12), math.sqrt(frames - 1))


def motion_stats(clips: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-clip ``velocity_residual``, ``persistence`` and ``object_found`` for uint8 clips ``[B]``."""
    tr = track(clips)
    return {"velocity_residual": velocity_residual(tr), "persistence": persistence(tr),
            "object_found": tr.found.to(torch.float64).mean(dim=1)}


def summarise(per_clip: dict[str, torch.Tensor]) -> dict[str, float]:
    """Means over clips (NaN clips of the velocity residual are left out)."""
    return {name: float(values[~values.isnan()].mean()) if (~values.isnan()).any() else float("nan")
            for name, values in per_clip.items()}
