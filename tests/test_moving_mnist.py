"""moving_mnist: the generator on a tiny fake MNIST (idx, idx.gz, npz) and the fixed-sequence file."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch

from vidgan_cli.data.moving_mnist import MovingMNIST, bounce


def _digits(n=5):
    rng = np.random.default_rng(0)
    digits = np.zeros((n, 28, 28), np.uint8)
    digits[:, 6:22, 10:18] = rng.integers(100, 256, (n, 1, 1), dtype=np.uint8)  # a bright bar
    return digits


def _idx_bytes(digits):
    n, h, w = digits.shape
    header = b"\x00\x00\x08\x03" + b"".join(v.to_bytes(4, "big") for v in (n, h, w))
    return header + digits.tobytes()


@pytest.fixture(params=["idx", "gz", "npz"])
def mnist_file(tmp_path, request):
    digits = _digits()
    if request.param == "idx":
        path = tmp_path / "train-images-idx3-ubyte"
        path.write_bytes(_idx_bytes(digits))
    elif request.param == "gz":
        path = tmp_path / "train-images-idx3-ubyte.gz"
        path.write_bytes(gzip.compress(_idx_bytes(digits)))
    else:
        path = tmp_path / "mnist.npz"
        np.savez(path, x_train=digits, y_train=np.arange(5))
    return path


def test_generated_clips_shape_range_and_determinism(mnist_file):
    data = MovingMNIST(mnist_path=str(mnist_file), frames=10, length=20, seed=3)
    assert len(data) == 20 and data.class_names == [] and data.num_classes == 0
    clip, label = data[4]
    assert clip.shape == (10, 64, 64, 3) and clip.dtype == torch.uint8 and int(label) == 0
    assert torch.equal(clip[..., 0], clip[..., 2])  # grayscale repeated
    assert (clip.flatten(1).amax(1) >= 100).all()  # the digits are visible in every frame
    torch.testing.assert_close(clip, MovingMNIST(mnist_path=str(mnist_file), frames=10, seed=3)[4][0])
    assert not torch.equal(clip, MovingMNIST(mnist_path=str(mnist_file), frames=10, seed=4)[4][0])
    assert not torch.equal(clip, data[5][0])
    assert not torch.equal(clip[0], clip[-1])  # it moves
    clips, labels = data.__getitems__([4, 0])
    assert clips.shape == (2, 10, 64, 64, 3) and torch.equal(clips[0], clip) and labels.tolist() == [0, 0]


def test_one_digit_keeps_its_mass_while_bouncing(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x_train=_digits(1))
    data = MovingMNIST(mnist_path=str(path), frames=40, resolution=40, num_digits=1, speed=5.0)
    clip = data[0][0][..., 0].numpy()
    assert (clip.reshape(40, -1).astype(int).sum(1) == int(_digits(1).astype(int).sum())).all()


def test_bounce_reflects_inside_the_limits():
    pos = bounce(np.array([1.0]), np.array([3.0]), 10.0, 8)[:, 0]
    np.testing.assert_allclose(pos, [1, 4, 7, 10, 7, 4, 1, 2])


def test_sequence_file(tmp_path):
    seq = np.random.default_rng(0).integers(0, 256, (20, 3, 64, 64), dtype=np.uint8)
    np.save(tmp_path / "mnist_test_seq.npy", seq)
    data = MovingMNIST(sequence_path=str(tmp_path / "mnist_test_seq.npy"), frames=16)
    assert len(data) == 3
    clip = data[1][0]
    assert clip.shape == (16, 64, 64, 3)
    np.testing.assert_array_equal(clip[..., 1].numpy(), seq[:16, 1])
    with pytest.raises(ValueError, match="holds 20 frames of 64x64"):
        MovingMNIST(sequence_path=str(tmp_path / "mnist_test_seq.npy"), frames=21)
    with pytest.raises(ValueError, match=r"length must be in 1..3"):
        MovingMNIST(sequence_path=str(tmp_path / "mnist_test_seq.npy"), length=4)


def test_missing_files_say_where_to_get_them_and_that_nothing_is_downloaded(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"mnist_path=.* does not exist.*downloads nothing.*MNIST site"):
        MovingMNIST(mnist_path=str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match=r"sequence_path=.* does not exist.*Toronto Moving MNIST page"):
        MovingMNIST(sequence_path=str(tmp_path / "nope.npy"))
    with pytest.raises(ValueError, match="exactly one of dataset.mnist_path and dataset.sequence_path"):
        MovingMNIST()


def test_bad_inputs(tmp_path, mnist_file):
    bad = tmp_path / "bad-idx"
    bad.write_bytes(b"\x00\x00\x08\x01" + bytes(20))
    with pytest.raises(ValueError, match="not an MNIST idx3 image file"):
        MovingMNIST(mnist_path=str(bad))
    with pytest.raises(ValueError, match="unconditional: dataset.num_classes must be 0"):
        MovingMNIST(mnist_path=str(mnist_file), num_classes=10)
    with pytest.raises(ValueError, match="resolution must be >= 28"):
        MovingMNIST(mnist_path=str(mnist_file), resolution=16)
