"""Exponential moving average of the generator's weights, with a half-life counted in clips."""

from __future__ import annotations

import torch
from torch import nn


def ema_beta(clips_per_step: int, clips_seen: int, half_life_clips: float, rampup: float) -> float:
    """Decay per step so that a weight's influence halves after ``half_life_clips`` clips.

    With ``rampup`` the half-life is at most ``rampup * clips_seen``: early in training the average
    follows G closely instead of remembering its random initialisation.
    """
    half_life = half_life_clips
    if rampup > 0:
        half_life = min(half_life, clips_seen * rampup)
    if half_life <= 0:
        return 0.0
    return 0.5 ** (clips_per_step / half_life)


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, beta: float) -> None:
    """``ema = beta * ema + (1 - beta) * model`` for parameters; buffers (BN statistics) are copied."""
    ema_params = list(ema.parameters())
    model_params = list(model.parameters())
    torch._foreach_lerp_(ema_params, model_params, 1.0 - beta)
    for ema_buf, buf in zip(ema.buffers(), model.buffers(), strict=True):
        ema_buf.copy_(buf)
