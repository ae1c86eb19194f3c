"""DiffAugment: one transform per clip shared by its frames, identity when empty, differentiable."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate

from vidgan_cli.augment import OPS, DiffAugment

B, T, S = 6, 4, 16


def still_clips(seed: int = 0) -> torch.Tensor:
    """Clips whose frames are all the same random image: [B, 3, T, S, S] in [-1, 1]."""
    gen = torch.Generator().manual_seed(seed)
    image = torch.rand(B, 3, 1, S, S, generator=gen) * 2 - 1
    return image.expand(-1, -1, T, -1, -1).contiguous()


def test_empty_policy_and_zero_probability_are_the_identity():
    video = still_clips()
    assert DiffAugment("")(video) is video
    assert DiffAugment("color,translation,cutout", p=0.0)(video) is video


@pytest.mark.parametrize("policy", ["color", "brightness", "saturation", "contrast", "translation",
                                    "cutout", "color,translation,cutout"])
def test_every_frame_of_a_clip_gets_the_same_transform(policy):
    torch.manual_seed(0)
    video = still_clips()
    out = DiffAugment(policy)(video)
    assert out.shape == video.shape
    # identical frames in -> identical frames out, yet the clips did change
    assert torch.allclose(out, out[:, :, :1].expand_as(out), atol=1e-6)
    assert not torch.allclose(out, video)


def test_translation_moves_all_frames_of_a_clip_by_one_shift():
    torch.manual_seed(1)
    video = torch.zeros(B, 1, T, S, S)
    for t in range(T):  # a moving dot, kept > 2 px (the largest shift at 16 px) from the borders
        video[:, 0, t, 4 + t, 5 + t] = 1.0
    out = DiffAugment("translation")(video)
    shifts = set()
    for b in range(B):
        positions = [tuple((out[b, 0, t] == 1).nonzero()[0].tolist()) for t in range(T)]
        moved = {(r - (4 + t), c - (5 + t)) for t, (r, c) in enumerate(positions)}
        assert len(moved) == 1
        (dy, dx), = moved
        assert abs(dy) <= 2 and abs(dx) <= 2
        shifts.add((dy, dx))
        assert out[b].sum().item() == T  # only moved, nothing lost or duplicated
    assert len(shifts) > 1  # clips get their own shifts


def test_cutout_erases_the_same_square_in_every_frame():
    torch.manual_seed(2)
    video = torch.ones(B, 3, T, S, S)
    out = DiffAugment("cutout")(video)
    erased = out == 0
    assert torch.equal(erased, erased[:, :, :1].expand_as(erased))
    area = erased[:, 0, 0].flatten(1).sum(1)
    assert (area > 0).all() and (area <= (S // 2) ** 2).all()


def test_gradients_reach_the_input():
    torch.manual_seed(3)
    video = still_clips().requires_grad_(True)
    before = video.detach().clone()
    DiffAugment("color,translation,cutout")(video).square().sum().backward()
    assert torch.equal(video.detach(), before)  # nothing was done in place
    assert torch.isfinite(video.grad).all() and video.grad.abs().sum() > 0


def test_translation_gradient_counts_where_each_pixel_landed():
    torch.manual_seed(4)
    video = torch.randn(B, 3, T, S, S, requires_grad=True)
    DiffAugment("translation")(video).sum().backward()
    # each input pixel lands at most once: gradient 1 where it stays in frame, 0 where shifted out
    assert set(video.grad.unique().tolist()) <= {0.0, 1.0}
    assert video.grad.mean() > 0.7


def test_probability_augments_only_some_clips():
    torch.manual_seed(5)
    video = torch.randn(64, 3, 2, 8, 8)
    out = DiffAugment("brightness", p=0.5)(video)
    unchanged = sum(torch.equal(out[b], video[b]) for b in range(64))
    assert 10 < unchanged < 54


def test_unknown_op_names_the_allowed_ones():
    with pytest.raises(ValueError, match="unknown op.*'rotate'.*color, brightness, saturation, contrast, "
                                         "translation, cutout"):
        DiffAugment("color,rotate")
    assert set(OPS) == {"color", "brightness", "saturation", "contrast", "translation", "cutout"}
    with pytest.raises(ValueError, match="augment.p"):
        DiffAugment("color", p=1.5)


@pytest.mark.parametrize("name, ops", [("none", 0), ("diffaug", 5)])
def test_augment_yamls_instantiate(compose_train, name, ops):
    augment = instantiate(compose_train(f"augment={name}").augment)
    assert isinstance(augment, DiffAugment) and len(augment.ops) == ops
