"""Inception-I3D: the FVD weights file layout loads strictly; forward and preprocessing shapes."""

import json
import math
from pathlib import Path

import pytest
import torch

from vidgan_cli.metrics.i3d import (
    I3D_FILENAME,
    InceptionI3d,
    _same_pad,
    load_i3d,
    preprocess_for_i3d,
)

MANIFEST = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "i3d_pretrained_400.keys.json"


def manifest_tensors() -> dict[str, list[int]]:
    if not MANIFEST.is_file():
        pytest.skip(f"fixture {MANIFEST} not present")
    return json.loads(MANIFEST.read_text())["tensors"]


def random_state_dict(tensors: dict[str, list[int]], seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict with the manifest's names and shapes; conv weights scaled so activations stay finite."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape in tensors.items():
        if name.endswith("num_batches_tracked"):
            state[name] = torch.tensor(0, dtype=torch.long)
        elif name.endswith("running_var"):
            state[name] = torch.rand(shape, generator=gen) + 0.5
        elif name.endswith("conv3d.weight"):
            state[name] = torch.randn(shape, generator=gen) / math.sqrt(math.prod(shape[1:]))
        elif name.endswith("bn.weight"):
            state[name] = torch.ones(shape)
        else:
            state[name] = torch.randn(shape, generator=gen) * 0.1
    return state


@pytest.fixture(scope="module")
def i3d_state() -> dict[str, torch.Tensor]:
    return random_state_dict(manifest_tensors())


@pytest.fixture(scope="module")
def i3d_file(tmp_path_factory, i3d_state) -> Path:
    path = tmp_path_factory.mktemp("i3d") / I3D_FILENAME
    torch.save(i3d_state, path)
    return path


def test_module_layout_equals_the_weights_file_manifest(i3d_state):
    tensors = manifest_tensors()
    model = InceptionI3d(num_classes=400)
    own = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert sorted(own) == sorted(tensors)
    assert {k: own[k] for k in tensors} == tensors
    model.load_state_dict(i3d_state, strict=True)


def test_load_i3d_strict_eval_mode(i3d_file):
    model = load_i3d(i3d_file)
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())


def test_load_i3d_refuses_a_different_layout(tmp_path, i3d_state):
    state = dict(i3d_state)
    state.pop("Mixed_5c.b3b.bn.running_mean")
    bad = tmp_path / "bad.pt"
    torch.save(state, bad)
    with pytest.raises(ValueError, match="Mixed_5c.b3b.bn.running_mean"):
        load_i3d(bad)
    state = {**i3d_state, "logits.conv3d.bias": torch.zeros(600)}
    torch.save(state, bad)
    with pytest.raises(ValueError, match="logits.conv3d.bias"):
        load_i3d(bad)


@pytest.mark.parametrize("path", [None, "/nonexistent/i3d_pretrained_400.pt"])
def test_missing_weights_error_says_what_and_where(path):
    with pytest.raises(FileNotFoundError) as err:
        load_i3d(path)
    message = str(err.value)
    assert I3D_FILENAME in message and "Kinetics-400" in message
    assert "not download" in message and "i3d_path=" in message


def test_forward_gives_400_finite_logits(i3d_file):
    model = load_i3d(i3d_file)
    clips = torch.randint(0, 256, (1, 8, 32, 32, 3), dtype=torch.uint8)
    with torch.no_grad():
        logits = model(preprocess_for_i3d(clips))
    assert logits.shape == (1, 400)
    assert torch.isfinite(logits).all() and logits.std() > 0


def test_preprocess_resizes_short_side_crops_centre_and_scales():
    clips = torch.zeros(2, 3, 32, 48, 3, dtype=torch.uint8)
    clips[0] = 255
    clips[1, :, :, :4] = 255  # a white band on the left edge: cropped away by the centre crop
    x = preprocess_for_i3d(clips)
    assert x.shape == (2, 3, 3, 224, 224) and x.dtype == torch.float32
    assert torch.allclose(x[0], torch.ones_like(x[0]))
    assert x[1].max() == -1.0  # 48 -> 336 wide, crop keeps columns 56..279; the band ends near 28
    tall = preprocess_for_i3d(torch.full((1, 2, 100, 48, 3), 128, dtype=torch.uint8))
    assert tall.shape == (1, 3, 2, 224, 224)
    assert tall.min() >= -1 and tall.max() <= 1
    with pytest.raises(ValueError, match="uint8"):
        preprocess_for_i3d(torch.zeros(1, 2, 8, 8, 3))


@pytest.mark.parametrize("size,kernel,stride,expected", [
    (224, 7, 2, (2, 3)), (112, 3, 2, (0, 1)), (8, 7, 2, (2, 3)), (4, 3, 2, (0, 1)), (7, 3, 1, (1, 1)),
    (2, 2, 2, (0, 0)), (3, 2, 2, (0, 1)),
])
def test_same_padding_matches_tensorflow(size, kernel, stride, expected):
    assert _same_pad(size, kernel, stride) == expected
    front, back = expected
    assert math.ceil(size / stride) == (size + front + back - kernel) // stride + 1
