"""Inception-I3D (Carreira & Zisserman, "Quo Vadis, Action Recognition?", 2017) for FVD.

The module names and shapes follow the PyTorch port of the Kinetics-400 I3D whose weights file,
``i3d_pretrained_400.pt``, is the de-facto FVD feature extractor of video-generation codebases, so that
file loads with ``strict=True``.  The TensorFlow original pads "SAME" (asymmetric when the total pad is
odd, extra pixel at the end); PyTorch convolutions cannot, so every conv and max-pool pads explicitly
from the input size.  Max-pools follow a ReLU, so zero padding equals TensorFlow's ignore-the-pad.

FVD features are the 400 Kinetics logits averaged over time, for clips preprocessed by
:func:`preprocess_for_i3d` (short side resized to 224 bilinearly, centre crop, values in ``[-1, 1]``).
The weights are never downloaded: the user supplies the file (see :func:`missing_weights_message`).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

I3D_FILENAME = "i3d_pretrained_400.pt"
I3D_SIZE = 224


def _same_pad(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow "SAME" padding of one dimension as (front, back); the odd pixel goes at the back."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _pad_same(x: torch.Tensor, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> torch.Tensor:
    t, h, w = x.shape[2:]
    pt, ph, pw = (_same_pad(n, k, s) for n, k, s in zip((t, h, w), kernel, stride, strict=True))
    return F.pad(x, (*pw, *ph, *pt))


class Unit3D(nn.Module):
    """Conv3d with SAME padding, then BatchNorm (eps 1e-3) and ReLU; the logits unit has neither."""

    def __init__(self, in_channels: int, out_channels: int, kernel=(1, 1, 1), stride=(1, 1, 1),
                 norm_act: bool = True):
        super().__init__()
        self.kernel, self.stride = tuple(kernel), tuple(stride)
        self.conv3d = nn.Conv3d(in_channels, out_channels, self.kernel, self.stride, bias=not norm_act)
        self.bn = nn.BatchNorm3d(out_channels, eps=1e-3, momentum=0.01) if norm_act else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3d(_pad_same(x, self.kernel, self.stride))
        return x if self.bn is None else F.relu(self.bn(x))


class MaxPoolSame(nn.Module):
    def __init__(self, kernel, stride):
        super().__init__()
        self.kernel, self.stride = tuple(kernel), tuple(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool3d(_pad_same(x, self.kernel, self.stride), self.kernel, self.stride)


class Mixed(nn.Module):
    """Inception block: 1x1 | 1x1 -> 3x3x3 | 1x1 -> 3x3x3 | maxpool 3x3x3 -> 1x1, concatenated."""

    def __init__(self, in_channels: int, widths: tuple[int, int, int, int, int, int]):
        super().__init__()
        w0, w1a, w1b, w2a, w2b, w3 = widths
        self.b0 = Unit3D(in_channels, w0)
        self.b1a = Unit3D(in_channels, w1a)
        self.b1b = Unit3D(w1a, w1b, kernel=(3, 3, 3))
        self.b2a = Unit3D(in_channels, w2a)
        self.b2b = Unit3D(w2a, w2b, kernel=(3, 3, 3))
        self.b3a = MaxPoolSame((3, 3, 3), (1, 1, 1))
        self.b3b = Unit3D(in_channels, w3)
        self.out_channels = w0 + w1b + w2b + w3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)),
                          self.b3b(self.b3a(x))], dim=1)


# (name, input channels, branch widths) of the Inception blocks, in order; the paper's Fig. 3.
_MIXED = {
    "Mixed_3b": (192, (64, 96, 128, 16, 32, 32)),
    "Mixed_3c": (256, (128, 128, 192, 32, 96, 64)),
    "Mixed_4b": (480, (192, 96, 208, 16, 48, 64)),
    "Mixed_4c": (512, (160, 112, 224, 24, 64, 64)),
    "Mixed_4d": (512, (128, 128, 256, 24, 64, 64)),
    "Mixed_4e": (512, (112, 144, 288, 32, 64, 64)),
    "Mixed_4f": (528, (256, 160, 320, 32, 128, 128)),
    "Mixed_5b": (832, (256, 160, 320, 32, 128, 128)),
    "Mixed_5c": (832, (384, 192, 384, 48, 128, 128)),
}
# Max-pools that sit before the named block.
_POOL_BEFORE = {
    "Mixed_3b": ("MaxPool3d_3a_3x3", (1, 3, 3), (1, 2, 2)),
    "Mixed_4b": ("MaxPool3d_4a_3x3", (3, 3, 3), (2, 2, 2)),
    "Mixed_5b": ("MaxPool3d_5a_2x2", (2, 2, 2), (2, 2, 2)),
}


class InceptionI3d(nn.Module):
    """Kinetics Inception-I3D; ``forward([B, 3, T, 224, 224] in [-1, 1]) -> logits [B, num_classes]``.

    The logits are computed on a 2x7x7 average pool stride 1 (the original head) and averaged over
    the remaining time steps.  Clips so short that fewer than 2 time steps reach the head (T <= 8)
    pool over the one that is left.
    """

    def __init__(self, num_classes: int = 400, in_channels: int = 3):
        super().__init__()
        self.Conv3d_1a_7x7 = Unit3D(in_channels, 64, kernel=(7, 7, 7), stride=(2, 2, 2))
        self.MaxPool3d_2a_3x3 = MaxPoolSame((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, kernel=(3, 3, 3))
        for name, (in_ch, widths) in _MIXED.items():
            if name in _POOL_BEFORE:
                pool_name, kernel, stride = _POOL_BEFORE[name]
                self.add_module(pool_name, MaxPoolSame(kernel, stride))
            self.add_module(name, Mixed(in_ch, widths))
        self.logits = Unit3D(1024, num_classes, norm_act=False)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Output of Mixed_5c, ``[B, 1024, T', H', W']``."""
        for module in self.children():
            if module is self.logits:
                break
            x = module(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = F.avg_pool3d(x, (min(2, x.shape[2]), 7, 7), stride=1)
        # The original applies dropout here; this module is only ever evaluated.
        return self.logits(x).mean(dim=(2, 3, 4))


def missing_weights_message(path: str | os.PathLike | None) -> str:
    where = f"not found at {path}" if path else "no path given"
    return (f"FVD/KVD need the Kinetics-400 Inception-I3D weights {I3D_FILENAME} ({where}). It is the "
            "I3D file used for FVD by VideoGPT, TATS and DIGAN (a PyTorch port of the DeepMind "
            "Kinetics-400 I3D), commonly obtained from those projects' released FVD weights. vidgan "
            "does not download it automatically: fetch it yourself and pass i3d_path=/path/to/"
            f"{I3D_FILENAME} (or set VIDGAN_I3D_PATH).")


def load_i3d(path: str | os.PathLike | None, device: str | torch.device = "cpu") -> InceptionI3d:
    """The Kinetics-400 I3D from a ``i3d_pretrained_400.pt`` state dict, strict, in eval mode."""
    if not path or not Path(path).expanduser().is_file():
        raise FileNotFoundError(missing_weights_message(path))
    path = Path(path).expanduser()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated, not a torch file, or holds code objects
        raise ValueError(f"{path} is not a readable I3D state dict: {err}") from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    model = InceptionI3d(num_classes=400)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(f"{path} does not hold the Kinetics-400 Inception-I3D state dict expected "
                         f"for FVD ({I3D_FILENAME}): {err}") from None
    return model.to(device).eval().requires_grad_(False)


def preprocess_for_i3d(clips: torch.Tensor, size: int = I3D_SIZE) -> torch.Tensor:
    """``uint8 [B, T, H, W, 3]`` -> ``float [B, 3, T, size, size]`` in ``[-1, 1]``.

    The short side is resized to ``size`` (bilinear, no antialiasing, as in the FVD reference code),
    then the centre ``size x size`` is cropped.
    """
    if clips.dtype != torch.uint8 or clips.ndim != 5 or clips.shape[-1] != 3:
        raise ValueError(f"expected uint8 clips [B, T, H, W, 3]; got {clips.dtype} {tuple(clips.shape)}")
    b, t, h, w, _ = clips.shape
    frames = clips.reshape(b * t, h, w, 3).permute(0, 3, 1, 2).float()
    # Integer arithmetic, so the short side is exactly ``size`` (no float round-up to size + 1).
    new_h, new_w = (size, -(-w * size // h)) if h <= w else (-(-h * size // w), size)
    frames = F.interpolate(frames, size=(new_h, new_w), mode="bilinear", align_corners=False)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    frames = frames[:, :, top:top + size, left:left + size]
    frames = (frames / 127.5 - 1).clamp(-1, 1)
    return frames.reshape(b, t, 3, size, size).permute(0, 2, 1, 3, 4).contiguous()
