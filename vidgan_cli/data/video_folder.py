"""Clips cut from a folder of the user's videos (UCF-101 layout or flat), read from a prepared cache.

    root/ClassA/v_001.avi  root/ClassA/x/v_002.mp4  root/ClassB/v_003.mkv   -> classes ClassA, ClassB
    root/a.mp4  root/b.webm                                                  -> unconditional

Decoding video every epoch is the classic bottleneck, so the dataset never decodes: it reads clips
from the cache that ``vidgan prepare`` builds (see :mod:`vidgan_cli.data.cache`), and builds it itself
when ``auto_prepare`` is on and no valid cache exists.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from vidgan_cli.data import cache as cache_lib

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".gif")


@dataclass
class VideoSource:
    """The videos a dataset uses: paths relative to ``root`` (posix), their labels and the classes."""

    root: Path
    files: list[str]
    labels: list[int]
    class_names: list[str]

    def fingerprint(self) -> list[tuple[str, int, int]]:
        """``(relpath, size, mtime_ns)`` of every file: a touched or replaced video changes it."""
        rows = []
        for rel in self.files:
            st = os.stat(self.root / rel)
            rows.append((rel, st.st_size, st.st_mtime_ns))
        return rows


def _listing(items: list[str], limit: int = 5) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" ... ({len(items)} in all)" if len(items) > limit else "")


def find_videos(root: Path) -> list[str]:
    """Relative posix paths of every video under ``root`` (recursive, sorted; hidden folders skipped)."""
    found = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))  # .vidgan_cache, .git, ...
        for name in names:
            if name.lower().endswith(VIDEO_EXTENSIONS) and not name.startswith("."):
                found.append((Path(folder) / name).relative_to(root).as_posix())
    return sorted(found)


def read_split_file(path: Path, root: Path) -> list[str]:
    """Relative paths listed in a UCF-101 split file (``Class/v_x.avi [label]`` per line)."""
    candidate = Path(path).expanduser()
    if not candidate.is_file() and not candidate.is_absolute() and (root / candidate).is_file():
        candidate = root / candidate
    if not candidate.is_file():
        raise FileNotFoundError(f"dataset.split_file={str(path)!r} does not exist (relative paths are "
                                f"tried from the current folder and from dataset.root={str(root)!r})")
    entries = []
    for line in candidate.read_text().splitlines():
        fields = line.strip().split()
        if fields:
            entries.append(fields[0].replace("\\", "/").lstrip("./"))
    if not entries:
        raise ValueError(f"dataset.split_file={str(candidate)!r} lists no videos")
    return entries


def _class_of(rel: str) -> str | None:
    parts = rel.split("/")
    return parts[0] if len(parts) > 1 else None


def scan_videos(root, split_file=None, classes=None) -> VideoSource:
    """Find the videos, their classes and labels; every bad input is an error naming what is allowed."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"dataset.root={str(root)!r} is not a folder")
    files = find_videos(root)
    if not files:
        raise FileNotFoundError(f"no videos under dataset.root={str(root)!r}; looked for files ending in "
                                f"{', '.join(VIDEO_EXTENSIONS)} (in subfolders too)")
    loose = [f for f in files if _class_of(f) is None]
    all_classes = sorted({c for f in files if (c := _class_of(f)) is not None})
    if loose and all_classes:
        raise ValueError(f"{str(root)!r} has videos both directly inside it ({_listing(loose)}) and in class "
                         "subfolders; put every video in a class folder (UCF-101 layout) or none "
                         "(unconditional)")
    class_names = all_classes
    if classes is not None:
        wanted = [classes] if isinstance(classes, str) else [str(c) for c in classes]
        if not all_classes:
            raise ValueError(f"dataset.classes={wanted} needs class subfolders, but {str(root)!r} has "
                             "its videos directly inside it (unconditional)")
        unknown = [c for c in wanted if c not in all_classes]
        if unknown:
            raise ValueError(f"dataset.classes: {unknown} not found under {str(root)!r}; "
                             f"classes there: {_listing(all_classes, 20)}")
        class_names = sorted(set(wanted))
        files = [f for f in files if _class_of(f) in class_names]
    if split_file:
        listed = read_split_file(split_file, root)
        available = set(find_videos(root))
        missing = [rel for rel in listed if rel not in available]
        if missing:
            raise FileNotFoundError(f"dataset.split_file lists {len(missing)} video(s) that are not under "
                                    f"{str(root)!r}: {_listing(missing)}")
        chosen = set(listed)
        files = [f for f in files if f in chosen]
        if not files:
            raise ValueError(f"dataset.split_file and dataset.classes={classes} leave no videos")
    labels = [class_names.index(_class_of(f)) if class_names else 0 for f in files]
    return VideoSource(root, files, labels, class_names)


def _resolve_num_classes(num_classes, class_names: list[str], root: Path) -> int:
    if num_classes is None:
        return len(class_names)
    if num_classes == 0 or num_classes == len(class_names):
        return num_classes
    found = f"{len(class_names)} class folders ({_listing(class_names, 10)})" if class_names \
        else "no class folders (videos directly inside it)"
    raise ValueError(f"dataset.num_classes={num_classes} but {str(root)!r} has {found}; set "
                     "dataset.num_classes: null to take it from the folders, or 0 for unconditional")


class VideoFolderDataset(Dataset):
    """Clips ``uint8 [frames, resolution, resolution, 3]`` from a prepared cache of a video folder.

    Frames are scaled so the short side is ``resolution`` and centre-cropped to a square. Each clip
    takes ``frames`` frames ``frame_stride`` apart; ``clips_per_video`` clips are spread evenly over
    each video (``null``: every non-overlapping window). ``num_classes``: ``null`` takes the number
    of class folders, a number must match it, ``0`` ignores the folders (unconditional).
    """

    def __init__(self, *, root: str, frames: int = 16, resolution: int = 64, num_classes: int | None = None,
                 frame_stride: int = 1, clips_per_video: int | None = None, split_file: str | None = None,
                 classes: list[str] | None = None, cache_dir: str | None = None, auto_prepare: bool = True,
                 backend: str = "auto"):
        if root is None or str(root) in ("", "???"):
            raise ValueError("dataset.root is required: the folder of videos, e.g. dataset.root=~/ucf101")
        self.settings = cache_lib.ClipSettings(frames, frame_stride, resolution, clips_per_video)
        source = scan_videos(root, split_file, classes)
        self.num_classes = _resolve_num_classes(num_classes, source.class_names, source.root)
        self.class_names = source.class_names if self.num_classes else []
        self.frames, self.resolution = frames, resolution
        key = cache_lib.settings_hash(self.settings, source.fingerprint(), source.labels, source.class_names)
        self.cache_path = cache_lib.cache_folder(source.root, cache_dir, key)
        opened = cache_lib.open_cache(self.cache_path, key)
        if opened is None:
            if not auto_prepare:
                raise FileNotFoundError(
                    f"no prepared cache for these settings at {str(self.cache_path)!r}; run "
                    f"`vidgan prepare dataset=video_folder dataset.root={root}` with the same dataset.* "
                    "settings (or set dataset.auto_prepare=true)")
            from vidgan_cli.prepare import build_cache

            log.info("no valid cache for %s: preparing it now in %s", source.root, self.cache_path)
            build_cache(source, self.settings, self.cache_path, key, backend=backend)
            opened = cache_lib.open_cache(self.cache_path, key)
            if opened is None:
                raise RuntimeError(f"preparing {str(self.cache_path)!r} did not leave a valid cache")
        self.clips = opened.clips
        labels = opened.labels if self.num_classes else np.zeros_like(opened.labels)
        self.labels = torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int):
        return torch.from_numpy(self.clips[index]), self.labels[index]

    def __getitems__(self, indices):
        idx = np.asarray(indices, dtype=np.int64)
        return torch.from_numpy(self.clips.take(idx)), self.labels[torch.from_numpy(idx)]
