"""DiffAugment for video clips (Zhao et al. 2020, "Differentiable Augmentation for Data-Efficient
GAN Training"), applied to both real and fake clips before the discriminator.

Every random parameter is drawn once per clip ([B]) and broadcast over its frames, so a clip is
transformed as a whole and D cannot tell augmentation from motion. All ops are out-of-place
arithmetic or gathers, so gradients reach the generator through them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

TRANSLATION_RATIO = 0.125  # max shift, as a fraction of the frame side
CUTOUT_RATIO = 0.5         # side of the erased square, as a fraction of the frame side


def _per_clip(video: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """[B] -> [B, 1, 1, 1, 1] in the video's dtype, to broadcast over channels, frames and pixels."""
    return values.to(video.dtype).view(-1, *([1] * (video.dim() - 1)))


def _uniform(video: torch.Tensor) -> torch.Tensor:
    return torch.rand(video.shape[0], device=video.device)


def brightness(video: torch.Tensor) -> torch.Tensor:
    return video + _per_clip(video, _uniform(video) - 0.5)


def saturation(video: torch.Tensor) -> torch.Tensor:
    grey = video.mean(dim=1, keepdim=True)
    return (video - grey) * _per_clip(video, _uniform(video) * 2) + grey


def contrast(video: torch.Tensor) -> torch.Tensor:
    # The mean over the whole clip (not per frame) keeps the transform identical across frames.
    mean = video.mean(dim=(1, 2, 3, 4), keepdim=True)
    return (video - mean) * _per_clip(video, _uniform(video) + 0.5) + mean


def _shift_axis(video: torch.Tensor, shift: torch.Tensor, max_shift: int, dim: int) -> torch.Tensor:
    """Move every clip by shift[b] (|shift| <= max_shift) pixels along ``dim``, filling with zeros.

    Pad by the largest possible shift, then gather: no data-dependent sizes, so no host sync.
    """
    if max_shift == 0:
        return video
    pad = [0, 0] * (video.dim() - dim)
    pad[-2:] = [max_shift, max_shift]  # F.pad lists the last dim first
    padded = torch.nn.functional.pad(video, pad)
    size = video.shape[dim]
    index = torch.arange(size, device=video.device).view(1, size) + max_shift - shift.view(-1, 1)
    view = [video.shape[0]] + [1] * (video.dim() - 1)
    view[dim] = size
    expanded = list(padded.shape)
    expanded[dim] = size
    return padded.gather(dim, index.view(view).expand(expanded))


def translation(video: torch.Tensor) -> torch.Tensor:
    height, width = video.shape[-2:]
    max_dy, max_dx = int(height * TRANSLATION_RATIO + 0.5), int(width * TRANSLATION_RATIO + 0.5)
    b = video.shape[0]
    dy = torch.randint(-max_dy, max_dy + 1, (b,), device=video.device)
    dx = torch.randint(-max_dx, max_dx + 1, (b,), device=video.device)
    shifted = _shift_axis(video, dy, max_dy, video.dim() - 2)
    return _shift_axis(shifted, dx, max_dx, video.dim() - 1)


def cutout(video: torch.Tensor) -> torch.Tensor:
    height, width = video.shape[-2:]
    cut_h, cut_w = int(height * CUTOUT_RATIO + 0.5), int(width * CUTOUT_RATIO + 0.5)
    b, device = video.shape[0], video.device
    # Centres range over the whole frame, so the square may be partly outside it (as in DiffAugment).
    top = torch.randint(0, height + (1 - cut_h % 2), (b, 1), device=device) - cut_h // 2
    left = torch.randint(0, width + (1 - cut_w % 2), (b, 1), device=device) - cut_w // 2
    rows = torch.arange(height, device=device).view(1, height)
    cols = torch.arange(width, device=device).view(1, width)
    inside_rows = (rows >= top) & (rows < top + cut_h)   # [B, H]
    inside_cols = (cols >= left) & (cols < left + cut_w)  # [B, W]
    erased = inside_rows[:, :, None] & inside_cols[:, None, :]
    keep = (~erased).to(video.dtype).view(b, 1, 1, height, width)
    return video * keep


OPS: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], ...]] = {
    "color": (brightness, saturation, contrast),
    "brightness": (brightness,),
    "saturation": (saturation,),
    "contrast": (contrast,),
    "translation": (translation,),
    "cutout": (cutout,),
}


def parse_policy(policy: str) -> list[str]:
    names = [name.strip() for name in policy.split(",") if name.strip()]
    unknown = [name for name in names if name not in OPS]
    if unknown:
        raise ValueError(f"augment.policy: unknown op(s) {unknown}; allowed: {', '.join(OPS)}")
    return names


class DiffAugment(nn.Module):
    """``video [B, C, T, H, W] -> video``: the policy's ops in order, each clip augmented with
    probability ``p``; the identity for an empty policy."""

    def __init__(self, policy: str = "", p: float = 1.0):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"augment.p must be in [0, 1]; got {p}")
        self.policy, self.p = policy, float(p)
        self.ops = [op for name in parse_policy(policy) for op in OPS[name]]

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        if not self.ops or self.p == 0.0:
            return video
        out = video
        for op in self.ops:
            out = op(out)
        if self.p < 1.0:
            chosen = torch.rand(video.shape[0], device=video.device) < self.p
            out = torch.where(chosen.view(-1, *([1] * (video.dim() - 1))), out, video)
        return out

    def extra_repr(self) -> str:
        return f"policy={self.policy!r}, p={self.p}"
