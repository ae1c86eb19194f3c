import hashlib

import numpy as np
import pytest
import torch

from vidgan_cli.data import StepBatchSampler, collate_batched
from vidgan_cli.data.shapes import SHAPE_NAMES, ShapesDataset, uniforms


def test_clip_shape_dtype_and_labels():
    ds = ShapesDataset(frames=8, resolution=32, num_classes=4, length=100)
    clip, label = ds[5]
    assert clip.shape == (8, 32, 32, 3) and clip.dtype == torch.uint8
    assert label.dtype == torch.long and label.item() == 5 % 4
    assert ds.class_names == ["circle", "square", "triangle", "cross"]


def test_deterministic_for_seed_and_index_and_batch_equals_single():
    a = ShapesDataset(length=50, seed=3)
    b = ShapesDataset(length=50, seed=3)
    clips, labels = a.__getitems__([7, 11, 2])
    assert torch.equal(clips[0], b[7][0]) and torch.equal(clips[2], b[2][0])
    assert labels.tolist() == [7 % 4, 11 % 4, 2 % 4]
    other = ShapesDataset(length=50, seed=4)
    assert not torch.equal(other[7][0], a[7][0])


def test_class_balance_exact_over_whole_dataset():
    ds = ShapesDataset(num_classes=6, length=600)
    counts = torch.bincount(ds.labels(range(600)), minlength=6)
    assert counts.tolist() == [100] * 6


def test_object_is_visible_moves_and_stays_in_frame():
    ds = ShapesDataset(frames=16, resolution=64, length=20)
    clips, _ = ds.__getitems__(list(range(20)))
    mask = clips.amax(-1) > 0                                  # [B, T, H, W]
    area = mask.flatten(2).sum(-1).float()                     # [B, T]
    assert (area > 20).all(), "every frame shows the object"
    # Area is stable over time (objects never leave the frame), within rasterisation noise.
    assert ((area.amax(1) - area.amin(1)) / area.mean(1)).max() < 0.35
    ys, xs = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    cx = (mask * xs).flatten(2).sum(-1) / area
    cy = (mask * ys).flatten(2).sum(-1) / area
    travelled = ((cx[:, 1:] - cx[:, :-1]) ** 2 + (cy[:, 1:] - cy[:, :-1]) ** 2).sqrt().sum(1)
    assert (travelled > 10).all(), "every object moves"


def test_unconditional_dataset_has_no_classes_and_mixes_kinds():
    ds = ShapesDataset(num_classes=0, length=10)
    assert ds.class_names == [] and ds[3][1].item() == 0


@pytest.mark.parametrize("kwargs, message", [
    ({"num_classes": 7}, "num_classes must be in 0..6"),
    ({"resolution": 4}, "resolution >= 8"),
    ({"length": 0}, "length >= 1"),
    ({"min_radius": 0.3, "max_radius": 0.2}, "min_radius"),
])
def test_bad_settings_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ShapesDataset(**kwargs)


def test_shape_names_cover_at_least_four_classes():
    assert len(SHAPE_NAMES) >= 4 and len(set(SHAPE_NAMES)) == len(SHAPE_NAMES)


def test_step_batch_sampler_resumes_mid_epoch_and_splits_ranks():
    full = iter(StepBatchSampler(10, 3, seed=1))
    batches = [next(full) for _ in range(7)]                   # crosses an epoch boundary (3/epoch)
    resumed = iter(StepBatchSampler(10, 3, seed=1, start=4))
    assert [next(resumed) for _ in range(3)] == batches[4:]
    r0 = iter(StepBatchSampler(12, 3, seed=0, rank=0, world_size=2))
    r1 = iter(StepBatchSampler(12, 3, seed=0, rank=1, world_size=2))
    a, b = next(r0), next(r1)
    assert len(set(a) | set(b)) == 6, "ranks draw disjoint clips"
    with pytest.raises(ValueError, match="fewer than one global batch"):
        StepBatchSampler(5, 3, world_size=2)


def test_collate_passes_batched_output_through_and_stacks_lists():
    clips, labels = torch.zeros(2, 4, 8, 8, 3, dtype=torch.uint8), torch.tensor([0, 1])
    assert collate_batched((clips, labels))[0] is clips
    stacked = collate_batched([(clips[0], labels[0]), (clips[1], labels[1])])
    assert stacked[0].shape == (2, 4, 8, 8, 3) and stacked[1].tolist() == [0, 1]


def test_uniforms_are_pinned_and_a_pure_function_of_seed_index_object_draw():
    """The clips are part of the reproducibility contract: these values must not change silently
    (a new generator needs a new ``draw_version``, which re-keys the real-feature caches)."""
    u = uniforms(0, np.array([0, 1, 49999]), 1, 3)
    np.testing.assert_allclose(u[:, 0], [[0.2558852, 0.08832386, 0.29049545],
                                         [0.4321614, 0.37411601, 0.15289076],
                                         [0.40366072, 0.03256538, 0.49686714]], atol=1e-8)
    np.testing.assert_array_equal(uniforms(0, np.array([49999, 1]), 1, 3), u[[2, 1]])  # batch-independent
    np.testing.assert_array_equal(uniforms(0, np.array([1]), 2, 5)[:, 0, :3], u[1:2, 0])  # more draws: a prefix
    assert not np.array_equal(uniforms(1, np.array([0]), 1, 3), u[:1])
    many = uniforms(0, np.arange(20000), 1, 10)
    assert many.shape == (20000, 1, 10) and many.min() >= 0.0 and many.max() < 1.0
    assert abs(many.mean() - 0.5) < 0.01 and abs(many.std() - 12 ** -0.5) < 0.01
    assert abs(np.corrcoef(many[:, 0, 0], many[:, 0, 1])[0, 1]) < 0.03  # draws of one clip
    assert abs(np.corrcoef(many[:-1, 0, 0], many[1:, 0, 0])[0, 1]) < 0.03  # neighbouring clips


@pytest.mark.parametrize("settings, digest, total", [
    (dict(resolution=32, frames=16, min_radius=0.2, max_radius=0.3), "0510b6cc6f2e4109", 24954167),
    (dict(resolution=16, frames=8, objects=3, num_classes=0, max_speed=12.0), "efd6b8bb13fd8d94", 3031735),
])
def test_rendered_clips_are_pinned(settings, digest, total):
    """The pixels are part of the contract too (real-feature caches, published scores): a renderer
    change must reproduce these bytes or come with a new ``draw_version``. One class-conditional
    batch of the quickstart's settings, one unconditional batch with overlapping, fast objects."""
    clips = ShapesDataset(**settings).render(list(range(40, 56)))
    assert int(clips.sum()) == total
    assert hashlib.sha256(clips.numpy().tobytes()).hexdigest()[:16] == digest


def test_parameters_stay_in_their_configured_ranges():
    ds = ShapesDataset(resolution=64, num_classes=0, length=4000, objects=2, min_radius=0.1, max_radius=0.2,
                       min_speed=1.0, max_speed=2.0)
    p = ds.params(range(4000)).double()
    kind, radius, x0, y0, vx, vy, colour = p[..., 0], p[..., 1], p[..., 2], p[..., 3], p[..., 4], p[..., 5], p[..., 6:]
    assert set(kind.unique().long().tolist()) == set(range(len(SHAPE_NAMES)))
    assert radius.min() >= 6.4 - 1e-4 and radius.max() <= 12.8 + 1e-4
    assert (x0 >= radius - 1e-4).all() and (x0 <= 63 - radius + 1e-4).all() and (y0 >= radius - 1e-4).all()
    speed = (vx ** 2 + vy ** 2).sqrt()
    assert speed.min() >= 1.0 - 1e-4 and speed.max() <= 2.0 + 1e-4
    assert colour.min() >= 0.25 - 1e-6 and (colour.amax(-1) == 1.0).all()  # one saturated channel each
