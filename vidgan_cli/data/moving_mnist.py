"""Moving MNIST: handwritten digits bouncing inside a square (Srivastava et al., 2015).

Two sources, both local files (nothing is ever downloaded):

- ``mnist_path``: MNIST digits (``train-images-idx3-ubyte`` or ``.gz``, or an ``.npz`` with ``x_train``
  as Keras ships it). Clips are generated on the fly, each a pure function of ``(seed, index)``:
  ``num_digits`` digits start at random places and move in a straight line at ``speed`` pixels per
  frame, reflecting off the borders; overlapping digits combine by maximum.
- ``sequence_path``: the fixed test set ``mnist_test_seq.npy`` (``uint8 [20, N, 64, 64]``).

Frames are grayscale, repeated to 3 channels. The dataset is unconditional (``num_classes: 0``).
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

DIGIT_SIZE = 28
WHERE_TO_GET = ("Moving MNIST needs a local file and downloads nothing. Set dataset.mnist_path to MNIST "
                "digits (train-images-idx3-ubyte or .gz from the MNIST site, http://yann.lecun.com/exdb/mnist/, "
                "or Keras' mnist.npz), or dataset.sequence_path to mnist_test_seq.npy from the Toronto "
                "Moving MNIST page, http://www.cs.toronto.edu/~nitish/unsupervised_video/")


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 16 or data[:4] != b"\x00\x00\x08\x03":
        raise ValueError(f"{str(path)!r} is not an MNIST idx3 image file (magic 0x00000803 expected)")
    n, h, w = (int.from_bytes(data[4 + 4 * k: 8 + 4 * k], "big") for k in range(3))
    if len(data) != 16 + n * h * w:
        raise ValueError(f"{str(path)!r} is truncated: header says {n} images of {h}x{w}")
    return np.frombuffer(data, dtype=np.uint8, offset=16).reshape(n, h, w)


def load_digits(path) -> np.ndarray:
    """MNIST digits ``uint8 [N, 28, 28]`` from an idx3 file (optionally .gz) or an npz (``x_train``)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"dataset.mnist_path={str(path)!r} does not exist. {WHERE_TO_GET}")
    if path.suffix == ".npz":
        with np.load(path) as archive:
            key = next((k for k in ("x_train", "images", "x_test") if k in archive.files), None)
            if key is None:
                raise ValueError(f"{str(path)!r} has arrays {archive.files}; expected x_train (Keras layout)")
            digits = archive[key]
    else:
        digits = _read_idx(path)
    if digits.dtype != np.uint8 or digits.ndim != 3 or digits.shape[1:] != (DIGIT_SIZE, DIGIT_SIZE):
        raise ValueError(f"{str(path)!r}: digits must be uint8 [N, 28, 28]; got {digits.dtype} {digits.shape}")
    return digits


def load_sequences(path) -> np.ndarray:
    """The fixed Moving MNIST clips ``uint8 [20, N, 64, 64]`` (memory-mapped)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"dataset.sequence_path={str(path)!r} does not exist. {WHERE_TO_GET}")
    seq = np.load(path, mmap_mode="r")
    if seq.dtype != np.uint8 or seq.ndim != 4 or seq.shape[2] != seq.shape[3]:
        raise ValueError(f"{str(path)!r} must be uint8 [T, N, H, W] like mnist_test_seq.npy "
                         f"([20, 10000, 64, 64]); got {seq.dtype} {seq.shape}")
    return seq


def bounce(start: np.ndarray, velocity: np.ndarray, limit: float, frames: int) -> np.ndarray:
    """Positions ``[frames, ...]`` moving at ``velocity`` from ``start``, reflecting inside ``[0, limit]``."""
    unfolded = start + velocity * np.arange(frames).reshape(-1, *([1] * start.ndim))
    phase = np.remainder(unfolded, 2 * limit)  # a triangle wave of period 2*limit: exact for any speed
    return limit - np.abs(phase - limit)


class MovingMNIST(Dataset):
    """Clips ``uint8 [frames, resolution, resolution, 3]`` of bouncing MNIST digits; labels are 0."""

    def __init__(self, *, frames: int = 20, resolution: int = 64, num_classes: int | None = 0,
                 mnist_path: str | None = None, sequence_path: str | None = None, length: int | None = None,
                 num_digits: int = 2, speed: float = 3.6, seed: int = 0):
        if num_classes not in (0, None):
            raise ValueError(f"moving_mnist is unconditional: dataset.num_classes must be 0; got {num_classes}")
        if (mnist_path is None) == (sequence_path is None):
            raise ValueError(f"give exactly one of dataset.mnist_path and dataset.sequence_path. {WHERE_TO_GET}")
        if frames < 1 or num_digits < 1 or speed < 0:
            raise ValueError(f"moving_mnist needs frames >= 1, num_digits >= 1, speed >= 0; got "
                             f"frames={frames}, num_digits={num_digits}, speed={speed}")
        self.frames, self.resolution, self.num_classes = frames, resolution, 0
        self.class_names: list[str] = []
        self.num_digits, self.speed, self.seed = num_digits, float(speed), seed
        self.digits = self.sequences = None
        if sequence_path is not None:
            self.sequences = load_sequences(sequence_path)
            t, n, size, _ = self.sequences.shape
            if frames > t or resolution != size:
                raise ValueError(f"{sequence_path} holds {t} frames of {size}x{size}; dataset.frames must be "
                                 f"<= {t} and dataset.resolution = {size}; got {frames}, {resolution}")
            available = n
        else:
            if resolution < DIGIT_SIZE:
                raise ValueError(f"dataset.resolution must be >= {DIGIT_SIZE} (the digit size); got {resolution}")
            self.digits = load_digits(mnist_path)
            available = None
        self.length = length if length is not None else (available or 10_000)
        if self.length < 1 or (available is not None and self.length > available):
            raise ValueError(f"dataset.length must be in 1..{available or 'inf'}; got {self.length}")

    def __len__(self) -> int:
        return self.length

    def render(self, index: int) -> np.ndarray:
        """Clip ``index`` as grayscale ``uint8 [frames, resolution, resolution]``."""
        if self.sequences is not None:
            return np.ascontiguousarray(self.sequences[: self.frames, index])
        rng = np.random.default_rng([self.seed, index])
        limit = self.resolution - DIGIT_SIZE
        picks = rng.integers(0, len(self.digits), self.num_digits)
        start = rng.uniform(0, limit, (self.num_digits, 2))
        angle = rng.uniform(0, 2 * np.pi, self.num_digits)
        velocity = self.speed * np.stack([np.sin(angle), np.cos(angle)], axis=-1)
        corners = np.rint(bounce(start, velocity, limit, self.frames)).astype(int)  # [T, digits, (y, x)]
        clip = np.zeros((self.frames, self.resolution, self.resolution), dtype=np.uint8)
        for t in range(self.frames):
            for d, digit in enumerate(self.digits[picks]):
                y, x = corners[t, d]
                window = clip[t, y: y + DIGIT_SIZE, x: x + DIGIT_SIZE]
                np.maximum(window, digit, out=window)
        return clip

    def __getitem__(self, index: int):
        if not -self.length <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} clips")
        gray = self.render(index % self.length)
        return torch.from_numpy(np.repeat(gray[..., None], 3, axis=-1)), torch.tensor(0, dtype=torch.int64)

    def __getitems__(self, indices):
        clips = [self[int(i)][0] for i in indices]
        return torch.stack(clips), torch.zeros(len(clips), dtype=torch.int64)
