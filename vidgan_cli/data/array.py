"""Clips the user already has as an array: ``.npy`` or ``.npz`` of ``uint8 [N, T, H, W, C]``, C = 1 or 3.

An ``.npz`` holds the clips under ``clips`` (or as its only array) and may hold ``labels`` (ints) and
``class_names`` (strings). ``labels_path`` (a ``.npy`` of ints) gives labels for a ``.npy``. A ``.npy``
is memory-mapped (never loaded whole); an ``.npz`` is loaded into memory, so keep big data in ``.npy``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

LAYOUT = "uint8 [N, T, H, W, C] with C = 1 or 3"


def _load(path: Path) -> tuple[np.ndarray, np.ndarray | None, list[str] | None]:
    if path.suffix == ".npy":
        return np.load(path, mmap_mode="r"), None, None
    if path.suffix != ".npz":
        raise ValueError(f"dataset.path={str(path)!r} must end in .npy or .npz")
    with np.load(path, allow_pickle=False) as archive:
        names = archive.files
        key = "clips" if "clips" in names else (names[0] if len(names) == 1 else None)
        if key is None:
            raise ValueError(f"{str(path)!r} holds {names}; name the clip array 'clips'")
        labels = archive["labels"] if "labels" in names else None
        class_names = [str(c) for c in archive["class_names"]] if "class_names" in names else None
        return archive[key], labels, class_names


def _check_clips(clips: np.ndarray, path: Path, frames: int, resolution: int) -> None:
    if clips.dtype != np.uint8:
        raise TypeError(f"{str(path)!r}: clips must be {LAYOUT}; got dtype {clips.dtype} (convert floats in "
                        "[0, 1] with (x * 255).round().astype(np.uint8))")
    if clips.ndim != 5 or clips.shape[-1] not in (1, 3) or clips.shape[0] == 0:
        raise ValueError(f"{str(path)!r}: clips must be {LAYOUT}; got shape {clips.shape}")
    _, t, h, w, _ = clips.shape
    if t < frames or h != resolution or w != resolution:
        raise ValueError(f"{str(path)!r} holds clips of {t} frames of {h}x{w}; dataset.frames must be <= {t} "
                         f"and dataset.resolution = {h} = {w}; got frames={frames}, resolution={resolution}")


def _check_labels(labels: np.ndarray, n: int, num_classes: int, where: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{where}: labels must be integers [N={n}]; got {labels.dtype} {labels.shape}")
    if n and (labels.min() < 0 or labels.max() >= max(num_classes, 1)):
        raise ValueError(f"{where}: labels must be in 0..{max(num_classes - 1, 0)}; "
                         f"got {labels.min()}..{labels.max()}")
    return labels.astype(np.int64)


class ArrayDataset(Dataset):
    """Clips from an array file; the first ``frames`` frames of each clip; grayscale repeated to RGB."""

    def __init__(self, *, path: str, frames: int = 16, resolution: int = 64, num_classes: int | None = None,
                 labels_path: str | None = None, class_names: list[str] | None = None):
        if not path:
            raise ValueError("dataset.path is required: a .npy or .npz of " + LAYOUT)
        file = Path(path).expanduser()
        if not file.is_file():
            raise FileNotFoundError(f"dataset.path={str(file)!r} does not exist")
        clips, labels, stored_names = _load(file)
        _check_clips(clips, file, frames, resolution)
        if labels_path is not None:
            labels = np.load(Path(labels_path).expanduser())
        names = [str(c) for c in class_names] if class_names is not None else stored_names
        if num_classes is None:
            num_classes = len(names) if names else (int(np.max(labels)) + 1 if labels is not None else 0)
        if names is not None and len(names) != num_classes:
            raise ValueError(f"dataset.num_classes={num_classes} but {len(names)} class names are given")
        if num_classes and labels is None:
            raise ValueError(f"dataset.num_classes={num_classes} needs labels: a 'labels' array in the .npz "
                             "or dataset.labels_path")
        self.clips, self.frames, self.resolution, self.num_classes = clips, frames, resolution, num_classes
        self.class_names = (names or [str(i) for i in range(num_classes)]) if num_classes else []
        n = len(clips)
        self.labels = torch.from_numpy(_check_labels(labels, n, num_classes, str(labels_path or file))
                                       if num_classes else np.zeros(n, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.clips)

    def _as_rgb(self, clips: np.ndarray) -> torch.Tensor:
        clips = clips[:, : self.frames]
        if clips.shape[-1] == 1:
            clips = np.repeat(clips, 3, axis=-1)
        clips = np.ascontiguousarray(clips)
        return torch.from_numpy(clips if clips.flags.writeable else clips.copy())  # a memmap view is read-only

    def __getitem__(self, index: int):
        return self._as_rgb(self.clips[index][None])[0], self.labels[index]

    def __getitems__(self, indices):
        idx = np.asarray(indices, dtype=np.int64)
        return self._as_rgb(self.clips[idx]), self.labels[torch.from_numpy(idx)]
