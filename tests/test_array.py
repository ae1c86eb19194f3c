"""array: user clips from .npy / .npz with labels and class names; wrong inputs are named."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from vidgan_cli.data import collate_batched
from vidgan_cli.data.array import ArrayDataset


def _clips(n=6, t=5, size=8, c=3):
    return np.random.default_rng(0).integers(0, 256, (n, t, size, size, c), dtype=np.uint8)


def test_npy_rgb_unconditional(tmp_path):
    clips = _clips()
    np.save(tmp_path / "c.npy", clips)
    data = ArrayDataset(path=str(tmp_path / "c.npy"), frames=4, resolution=8)
    assert len(data) == 6 and data.num_classes == 0 and data.class_names == []
    clip, label = data[2]
    assert clip.shape == (4, 8, 8, 3) and clip.dtype == torch.uint8 and int(label) == 0
    np.testing.assert_array_equal(clip.numpy(), clips[2, :4])
    batch, labels = data.__getitems__([5, 1])
    np.testing.assert_array_equal(batch.numpy(), clips[[5, 1], :4])
    assert labels.dtype == torch.int64


def test_npz_gray_with_labels_and_class_names(tmp_path):
    clips = _clips(c=1)
    np.savez(tmp_path / "c.npz", clips=clips, labels=np.array([0, 1, 1, 0, 1, 0]),
             class_names=np.array(["walk", "run"]))
    data = ArrayDataset(path=str(tmp_path / "c.npz"), frames=5, resolution=8)
    assert data.num_classes == 2 and data.class_names == ["walk", "run"]
    clip, label = data[1]
    assert clip.shape == (5, 8, 8, 3) and int(label) == 1
    assert torch.equal(clip[..., 0], clip[..., 2])
    loader = DataLoader(data, batch_size=4, collate_fn=collate_batched)
    first, labels = next(iter(loader))
    assert first.shape == (4, 5, 8, 8, 3) and labels.tolist() == [0, 1, 1, 0]


def test_labels_path_and_config_class_names(tmp_path):
    np.save(tmp_path / "c.npy", _clips())
    np.save(tmp_path / "y.npy", np.array([2, 0, 1, 2, 0, 1]))
    data = ArrayDataset(path=str(tmp_path / "c.npy"), frames=5, resolution=8,
                        labels_path=str(tmp_path / "y.npy"), class_names=["a", "b", "c"])
    assert data.labels.tolist() == [2, 0, 1, 2, 0, 1] and data.num_classes == 3
    with pytest.raises(ValueError, match=r"labels must be in 0..1"):
        ArrayDataset(path=str(tmp_path / "c.npy"), frames=5, resolution=8, num_classes=2,
                     labels_path=str(tmp_path / "y.npy"))
    with pytest.raises(ValueError, match="num_classes=3 needs labels"):
        ArrayDataset(path=str(tmp_path / "c.npy"), frames=5, resolution=8, num_classes=3)


@pytest.mark.parametrize("array, err, match", [
    (np.zeros((2, 4, 8, 8, 3), np.float32), TypeError, r"uint8 \[N, T, H, W, C\].*got dtype float32"),
    (np.zeros((4, 8, 8, 3), np.uint8), ValueError, r"got shape \(4, 8, 8, 3\)"),
    (np.zeros((2, 4, 8, 8, 2), np.uint8), ValueError, "C = 1 or 3"),
    (np.zeros((2, 4, 8, 6, 3), np.uint8), ValueError, "resolution = 8 = 6"),
    (np.zeros((2, 3, 8, 8, 3), np.uint8), ValueError, "frames must be <= 3"),
])
def test_wrong_arrays_are_named(tmp_path, array, err, match):
    np.save(tmp_path / "c.npy", array)
    with pytest.raises(err, match=match):
        ArrayDataset(path=str(tmp_path / "c.npy"), frames=4, resolution=8)


def test_wrong_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ArrayDataset(path=str(tmp_path / "x.npy"))
    (tmp_path / "x.txt").write_text("1")
    with pytest.raises(ValueError, match=r"must end in \.npy or \.npz"):
        ArrayDataset(path=str(tmp_path / "x.txt"))
    np.savez(tmp_path / "two.npz", a=_clips(), b=_clips())
    with pytest.raises(ValueError, match="name the clip array 'clips'"):
        ArrayDataset(path=str(tmp_path / "two.npz"), frames=4, resolution=8)
