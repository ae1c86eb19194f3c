import math

import torch
from torch import nn

from vidgan_cli.train.ema import ema_beta, update_ema


def test_half_life_in_clips():
    beta = ema_beta(clips_per_step=16, clips_seen=10**9, half_life_clips=1600, rampup=0)
    assert math.isclose(beta ** 100, 0.5, rel_tol=1e-9), "100 steps of 16 clips halve the weight"


def test_rampup_limits_half_life_early():
    early = ema_beta(16, clips_seen=160, half_life_clips=10_000, rampup=0.05)  # half-life 8 clips
    assert math.isclose(early, 0.5 ** (16 / 8))
    assert ema_beta(16, clips_seen=0, half_life_clips=10_000, rampup=0.05) == 0.0


def test_update_lerps_parameters_and_copies_buffers():
    model, ema = nn.BatchNorm1d(3), nn.BatchNorm1d(3)
    with torch.no_grad():
        model.weight.fill_(2.0)
        ema.weight.fill_(0.0)
        model.running_mean.fill_(5.0)
    update_ema(ema, model, beta=0.75)
    assert torch.allclose(ema.weight, torch.full((3,), 0.5))
    assert torch.equal(ema.running_mean, model.running_mean)
