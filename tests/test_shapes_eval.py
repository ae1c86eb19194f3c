"""The shipped shapes evaluator (accuracy on held-out clips, refusals) and the motion metrics."""

import json

import pytest
import torch

from vidgan_cli.data.shapes import SHAPE_NAMES, ShapesDataset
from vidgan_cli.metrics.motion import motion_stats, summarise, track
from vidgan_cli.metrics.shapes_eval import (
    DEFAULT_WEIGHTS,
    clips_to_input,
    file_sha256,
    load_shapes_evaluator,
    settings_path,
)

HELDOUT_SEED = 4242  # neither the evaluator's training seed (1) nor its own held-out seed


@pytest.fixture(scope="module")
def evaluator():
    return load_shapes_evaluator()


def real_clips(resolution=32, n=240, num_classes=4, seed=HELDOUT_SEED, **kw):
    ds = ShapesDataset(frames=16, resolution=resolution, num_classes=num_classes, seed=seed, length=n, **kw)
    return ds.__getitems__(range(n))


def test_shipped_weights_are_a_plain_state_dict_with_settings():
    state = torch.load(DEFAULT_WEIGHTS, map_location="cpu", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    assert DEFAULT_WEIGHTS.stat().st_size < 5 * 2**20
    settings = json.loads(settings_path(DEFAULT_WEIGHTS).read_text())
    assert settings["frames"] == 16 and settings["resolution"] == 32
    assert settings["class_names"] == list(SHAPE_NAMES)
    assert settings["sha256"] == file_sha256(DEFAULT_WEIGHTS)
    assert settings["train"]["dataset_seed"] != settings["heldout"]["dataset_seed"]
    assert min(settings["heldout"]["accuracy"].values()) >= 0.99


@pytest.mark.parametrize("resolution", [32, 64])
def test_accuracy_on_held_out_clips(evaluator, resolution):
    clips, labels = real_clips(resolution=resolution, num_classes=4)
    _, pred = evaluator(clips)
    target = evaluator.class_index(list(SHAPE_NAMES[:4]))[labels]
    assert (pred == target).double().mean() >= 0.99


def test_accuracy_on_all_six_shapes(evaluator):
    clips, labels = real_clips(num_classes=6, n=180, seed=HELDOUT_SEED + 1)
    _, pred = evaluator(clips)
    assert (pred == labels).double().mean() >= 0.99


def test_features_are_penultimate_activations(evaluator):
    clips, _ = real_clips(n=6)
    feats, pred = evaluator(clips)
    assert feats.shape == (6, evaluator.net.head.in_features) and feats.dtype == torch.float64
    with torch.no_grad():
        logits = evaluator.net.head(feats.float())
    assert torch.equal(logits.argmax(1), pred)


def test_refuses_other_frame_counts_and_unknown_classes(evaluator):
    with pytest.raises(ValueError, match="16-frame"):
        evaluator.check_compatible(frames=8, class_names=["circle"])
    with pytest.raises(ValueError, match="16-frame"):
        evaluator(torch.zeros(1, 8, 32, 32, 3, dtype=torch.uint8))
    with pytest.raises(ValueError, match="hexagon"):
        evaluator.check_compatible(frames=16, class_names=["circle", "hexagon"])
    evaluator.check_compatible(frames=16, class_names=["ring", "circle"])


def test_settings_must_match_weights(tmp_path):
    weights = tmp_path / "ev.pt"
    weights.write_bytes(DEFAULT_WEIGHTS.read_bytes())
    settings = json.loads(settings_path(DEFAULT_WEIGHTS).read_text())
    settings_path(weights).write_text(json.dumps({**settings, "sha256": "0" * 64}))
    with pytest.raises(ValueError, match="does not match its settings"):
        load_shapes_evaluator(weights)
    with pytest.raises(FileNotFoundError, match="train_shapes_evaluator"):
        load_shapes_evaluator(tmp_path / "missing.pt")


def test_clips_to_input_resizes_to_canonical_resolution():
    clips = torch.full((2, 16, 64, 64, 3), 255, dtype=torch.uint8)
    x = clips_to_input(clips, 32)
    assert x.shape == (2, 3, 16, 32, 32)
    assert torch.allclose(x, torch.ones_like(x))
    assert clips_to_input(torch.zeros(1, 4, 32, 32, 3, dtype=torch.uint8), 32).min() == -1


@pytest.mark.parametrize("resolution", [32, 64])
def test_motion_metrics_small_for_real_clips(resolution):
    clips, _ = real_clips(resolution=resolution, n=128)
    stats = summarise(motion_stats(clips))
    assert stats["object_found"] == 1.0
    assert stats["velocity_residual"] < 0.015
    assert stats["persistence"] < 0.08


def test_motion_metrics_large_for_noise_and_jumbled_time():
    clips, _ = real_clips(n=64)
    noise = torch.randint(0, 256, clips.shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    stats = summarise(motion_stats(noise))
    assert stats["object_found"] == 0.0
    assert stats["velocity_residual"] == 1.0 and stats["persistence"] == pytest.approx(15 ** 0.5)
    shuffled = clips[:, torch.randperm(16, generator=torch.Generator().manual_seed(0))]
    assert summarise(motion_stats(shuffled))["velocity_residual"] > 0.05
    flicker = clips.clone()
    flicker[:, ::2] = 0  # the object vanishes every other frame
    flick = summarise(motion_stats(flicker))
    assert flick["persistence"] > 0.9 and flick["velocity_residual"] > 0.5


def test_track_follows_a_square_moving_at_constant_velocity():
    clips = torch.zeros(1, 5, 32, 32, 3, dtype=torch.uint8)
    for t in range(5):
        clips[0, t, 10:16, 8 + 2 * t:14 + 2 * t, 1] = 255
    tr = track(clips)
    assert tr.found.all()
    assert torch.allclose(tr.centroid[0, :, 0] * 32, torch.tensor([11.0, 13, 15, 17, 19], dtype=torch.float64))
    assert torch.allclose(tr.centroid[0, :, 1] * 32, torch.full((5,), 13.0, dtype=torch.float64))
    stats = motion_stats(clips)
    assert stats["velocity_residual"].item() == 0 and stats["persistence"].item() == 0
