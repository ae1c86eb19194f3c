"""The embedded default dataset: procedural clips of coloured shapes moving and bouncing.

Every clip is a pure function of ``(seed, index)``, so the dataset needs no files, no downloads and
no state: two processes (or two ranks) that ask for the same index get the same clip.  The label of
clip ``i`` is ``i % num_classes``, which makes every class equally frequent in any window of
``num_classes`` consecutive indices.  Rendering is vectorised over a whole batch (``__getitems__``),
so a batch of 16 clips of 16x64x64 costs a few milliseconds on one core.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

SHAPE_NAMES = ("circle", "square", "triangle", "cross", "diamond", "ring")


def _shape_mask(kind: int, dx: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    """Inside-mask of shape ``SHAPE_NAMES[kind]`` for pixel offsets in units of the object's radius."""
    adx, ady = dx.abs(), dy.abs()  # broadcast against each other: [..., 1, W] and [..., H, 1]
    name = SHAPE_NAMES[kind]
    if name == "circle":
        return dx * dx + dy * dy <= 1.0
    if name == "square":
        return torch.maximum(adx, ady) <= 0.8
    if name == "triangle":  # apex at dy=-1, base at dy=+0.8, widening linearly to the base
        return (dy <= 0.8) & (adx <= (dy + 1.0) / 1.8)
    if name == "cross":
        return ((adx <= 0.3) & (ady <= 1.0)) | ((ady <= 0.3) & (adx <= 1.0))
    if name == "diamond":
        return adx + ady <= 1.0
    r2 = dx * dx + dy * dy  # ring
    return (r2 <= 1.0) & (r2 >= 0.45)


DRAWS = 10  # uniforms per object: kind, radius, x0, y0, speed, angle, r, g, b, saturated channel
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser (Steele et al. 2014): a bijective, well-mixing hash of uint64 arrays."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def uniforms(seed: int, index: np.ndarray, objects: int, draws: int) -> np.ndarray:
    """Uniform doubles in [0, 1) ``[len(index), objects, draws]``, a pure function of
    ``(seed, index, object, draw)``: counter-based, so a batch costs a few vectorised NumPy ops
    instead of one seeded generator per clip (0.9 ms of a 2.3 ms batch of 16 when it was that)."""
    with np.errstate(over="ignore"):  # uint64 arithmetic wraps by design
        key = _mix64(np.asarray([seed], dtype=np.uint64) * _GOLDEN + np.uint64(1))
        clip = _mix64(key ^ (index.astype(np.uint64) * _GOLDEN))[:, None, None]
        counter = np.arange(objects * draws, dtype=np.uint64).reshape(1, objects, draws)
        bits = _mix64(clip + (counter + np.uint64(1)) * _GOLDEN)
    return (bits >> np.uint64(11)).astype(np.float64) * 2.0 ** -53


def _bounce(start: np.ndarray, velocity: np.ndarray, low: np.ndarray, high: np.ndarray,
            frames: int) -> np.ndarray:
    """Positions ``[..., T]`` of points moving at constant velocity and reflecting off ``[low, high]``.

    Reflection is a triangle wave of period ``2 * (high - low)``, exact for any speed, no loop.
    float32 NumPy: these arrays are small (a few numbers per object), where a NumPy op costs a
    microsecond and a torch op ten.
    """
    t = np.arange(frames, dtype=np.float32)
    span = (high - low)[..., None]
    unfolded = (start - low)[..., None] + velocity[..., None] * t
    phase = np.remainder(unfolded, 2 * span)
    return low[..., None] + span - np.abs(phase - span)


class ShapesDataset(Dataset):
    """Clips ``uint8 [T, H, W, 3]`` of 1..``objects`` shapes of one class on a black background.

    With ``num_classes > 0`` every object in clip ``i`` has the kind ``SHAPE_NAMES[i % num_classes]``;
    with ``num_classes == 0`` the dataset is unconditional and each object's kind is random.
    """

    def __init__(self, *, frames: int = 16, resolution: int = 64, num_classes: int = 4,
                 length: int = 50_000, seed: int = 0, objects: int = 1,
                 min_speed: float = 1.0, max_speed: float = 3.0,
                 min_radius: float = 0.12, max_radius: float = 0.2):
        if num_classes is None or not 0 <= num_classes <= len(SHAPE_NAMES):
            raise ValueError(f"dataset.num_classes must be in 0..{len(SHAPE_NAMES)} for shapes "
                             f"({', '.join(SHAPE_NAMES)}); got {num_classes}")
        if frames < 1 or resolution < 8:
            raise ValueError(f"shapes needs dataset.frames >= 1 and dataset.resolution >= 8; "
                             f"got frames={frames}, resolution={resolution}")
        if length < 1 or objects < 1:
            raise ValueError(f"shapes needs dataset.length >= 1 and dataset.objects >= 1; "
                             f"got length={length}, objects={objects}")
        if not 0 < min_radius <= max_radius < 0.5:
            raise ValueError("shapes needs 0 < dataset.min_radius <= dataset.max_radius < 0.5 "
                             f"(fractions of the frame); got {min_radius}, {max_radius}")
        if not 0 <= min_speed <= max_speed:
            raise ValueError(f"shapes needs 0 <= dataset.min_speed <= dataset.max_speed; "
                             f"got {min_speed}, {max_speed}")
        self.frames, self.resolution, self.num_classes = frames, resolution, num_classes
        self.length, self.seed, self.objects = length, seed, objects
        self.speed_range = (min_speed, max_speed)
        self.radius_range = (min_radius, max_radius)
        self.class_names = list(SHAPE_NAMES[:num_classes])
        # Which parameter generator drew the clips (2: the counter-based ``uniforms``; 1 seeded one
        # NumPy generator per clip). A public attribute, so it is part of the real-feature cache key.
        self.draw_version = 2

    def __len__(self) -> int:
        return self.length

    def label(self, index: int) -> int:
        return index % self.num_classes if self.num_classes else 0

    def params(self, indices) -> torch.Tensor:
        """Per-object parameters ``[B, objects, 9]``: kind, radius, x0, y0, vx, vy, r, g, b.

        Drawn for the whole batch at once from a counter-based hash of ``(seed, index, object, draw)``
        (``uniforms``): the same clip for the same index in any batch, process or rank.
        """
        index = np.asarray(indices, dtype=np.uint64).reshape(-1)
        u = uniforms(self.seed, index, self.objects, DRAWS)           # [B, K, DRAWS] in [0, 1)
        res = self.resolution
        if self.num_classes:
            kind = np.broadcast_to((index % self.num_classes).astype(np.float64)[:, None], u.shape[:2])
        else:
            kind = np.floor(u[..., 0] * len(SHAPE_NAMES))
        lo, hi = self.radius_range
        radius = (lo + (hi - lo) * u[..., 1]) * res
        x0 = radius + (res - 1 - 2 * radius) * u[..., 2]
        y0 = radius + (res - 1 - 2 * radius) * u[..., 3]
        # Speeds are given for 64 px frames; scale so motion looks the same at every resolution.
        lo, hi = self.speed_range
        speed = (lo + (hi - lo) * u[..., 4]) * res / 64
        angle = 2 * np.pi * u[..., 5]
        # Saturated colours: one channel high, the others random, so shapes never blend into black.
        colour = 0.25 + 0.75 * u[..., 6:9]
        np.put_along_axis(colour, np.floor(u[..., 9:10] * 3).astype(np.int64), 1.0, axis=-1)
        params = np.concatenate([np.stack([kind, radius, x0, y0, speed * np.cos(angle),
                                           speed * np.sin(angle)], -1), colour], -1)
        return torch.from_numpy(params).float()

    def render(self, indices) -> torch.Tensor:
        """Clips ``uint8 [B, T, H, W, 3]`` for the given indices, in one vectorised pass.

        Per-object quantities (paths, offsets from the centre along each axis, colours) are small
        and computed in NumPy, where an op costs a microsecond; the per-pixel masks and the canvas
        in torch (both threads). 113 -> 51 torch ops per batch: 1.09 -> 0.98 ms at 16x32x32."""
        params = self.params(indices).numpy()                                 # float32 [B, K, 9]
        frames, res = self.frames, self.resolution
        kind, radius = params[..., 0].astype(np.int64), params[..., 1]       # [B, K]
        low, high = radius, np.float32(res - 1) - radius
        xs = _bounce(params[..., 2], params[..., 4], low, high, frames)      # [B, K, T]
        ys = _bounce(params[..., 3], params[..., 5], low, high, frames)
        grid = np.arange(res, dtype=np.float32)
        r = radius[..., None, None, None]
        dx = ((grid - xs[..., None, None]) / r).reshape(-1, frames, 1, res)   # [B*K, T, 1, W]
        dy = ((grid[:, None] - ys[..., None, None]) / r).reshape(-1, frames, res, 1)  # [B*K, T, H, 1]
        # One mask computation per kind present: objects sorted by kind, so each kind is a slice.
        order = np.argsort(kind.reshape(-1), kind="stable")
        kinds, starts = np.unique(kind.reshape(-1)[order], return_index=True)
        bounds = [*starts.tolist(), len(order)]
        dx, dy = torch.from_numpy(dx[order]), torch.from_numpy(dy[order])
        masks = [_shape_mask(s, dx[a:b], dy[a:b])
                 for s, a, b in zip(kinds.tolist(), bounds[:-1], bounds[1:], strict=True)]
        inside = torch.cat(masks)[torch.from_numpy(np.argsort(order))].view(*kind.shape, frames, res, res)
        colour = torch.from_numpy(np.round(params[..., 6:9] * np.float32(255)).astype(np.uint8))  # [B, K, 3]
        canvas = inside[:, 0, ..., None] * colour[:, 0, None, None, None, :]  # [B, T, H, W, 3]
        for k in range(1, self.objects):  # later objects are painted over earlier ones
            canvas = torch.where(inside[:, k, ..., None], colour[:, k, None, None, None, :], canvas)
        return canvas

    def labels(self, indices) -> torch.Tensor:
        return torch.tensor([self.label(int(i)) for i in indices], dtype=torch.long)

    def __getitem__(self, index: int):
        if not -self.length <= index < self.length:
            raise IndexError(f"shapes index {index} out of range for length {self.length}")
        index %= self.length
        return self.render([index])[0], self.labels([index])[0]

    def __getitems__(self, indices):
        return self.render(indices), self.labels(indices)
