"""The clip cache that ``vidgan prepare`` writes and the video-folder dataset reads.

A cache is a folder named by a hash of every setting that shaped it (clip length, stride,
resolution, clips per video, classes, split, and the name, size and mtime of every source file), so a
changed setting or a touched file never reuses a stale cache:

    clips.npy            uint8 [N, T, H, W, 3] (a plain .npy: np.load(mmap_mode="r") opens it too)
    labels.npy           int64 [N] (class index from the first-level folder; 0 in a flat folder)
    meta.json            settings, class names and the manifest: source file, start frame, fps per clip
    prepare_report.json  files skipped and why
    COMPLETE             written last (atomically), holding the settings hash: no marker, no cache
    parts/               per-file results while preparing (resume an interrupted prepare); then removed

Reading goes through :class:`ClipStore`, which reads clips with ``os.pread`` instead of mapping the
file: pages of a memory map count in the process's RSS once touched, so iterating a memmapped cache
makes RSS grow with the cache size, while ``pread`` keeps it at one batch.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

CACHE_VERSION = 1
CACHE_DIRNAME = ".vidgan_cache"
MARKER = "COMPLETE"


@dataclass(frozen=True)
class ClipSettings:
    """How clips are cut from every video: what a cache's content depends on besides the files."""

    frames: int
    frame_stride: int
    resolution: int
    clips_per_video: int | None  # None: every non-overlapping window

    def __post_init__(self):
        for key in ("frames", "frame_stride", "resolution"):
            if not (isinstance(getattr(self, key), int) and getattr(self, key) >= 1):
                raise ValueError(f"dataset.{key} must be an integer >= 1; got {getattr(self, key)!r}")
        cpv = self.clips_per_video
        if cpv is not None and not (isinstance(cpv, int) and cpv >= 1):
            raise ValueError(f"dataset.clips_per_video must be an integer >= 1 or null (every "
                             f"non-overlapping window); got {cpv!r}")

    @property
    def span(self) -> int:
        """Source frames one clip covers."""
        return self.frames * self.frame_stride


# --------------------------------------------------------------------------------------------------
# naming


def settings_hash(settings: ClipSettings, files: list[tuple[str, int, int]], labels: list[int],
                  class_names: list[str]) -> str:
    """A short hash of everything that shapes a cache; ``files`` are ``(relpath, size, mtime_ns)``."""
    blob = json.dumps({"version": CACHE_VERSION, "settings": asdict(settings), "files": files,
                       "labels": labels, "class_names": class_names}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def cache_folder(root: Path, cache_dir: str | os.PathLike | None, key: str) -> Path:
    """``<cache_dir or root/.vidgan_cache>/<key>``."""
    base = Path(cache_dir).expanduser() if cache_dir else Path(root) / CACHE_DIRNAME
    return base / key


def is_complete(folder: Path, key: str) -> bool:
    """True when ``folder`` holds a finished cache for ``key`` (marker written last and matching)."""
    marker = folder / MARKER
    try:
        return marker.read_text().strip() == key and (folder / "clips.npy").is_file()
    except OSError:
        return False


def write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path: Path, obj) -> None:
    write_atomic(path, json.dumps(obj, indent=1).encode())


# --------------------------------------------------------------------------------------------------
# per-file parts (resume)


def part_paths(folder: Path, index: int) -> tuple[Path, Path]:
    """Clips ``.npy`` and result ``.json`` of source file ``index``; the json is written last."""
    parts = folder / "parts"
    return parts / f"{index:07d}.npy", parts / f"{index:07d}.json"


def write_part(folder: Path, index: int, clips: np.ndarray | None, result: dict) -> None:
    clips_path, result_path = part_paths(folder, index)
    clips_path.parent.mkdir(parents=True, exist_ok=True)
    if clips is not None and len(clips):
        fd, tmp = tempfile.mkstemp(dir=clips_path.parent, suffix=".npy.tmp")
        with os.fdopen(fd, "wb") as f:
            np.save(f, clips)
        os.replace(tmp, clips_path)
    write_json(result_path, result)


def read_part_result(folder: Path, index: int) -> dict | None:
    """The stored result of file ``index`` if it finished with clips in an earlier run, else None."""
    clips_path, result_path = part_paths(folder, index)
    try:
        result = json.loads(result_path.read_text())
    except (OSError, ValueError):
        return None
    if result.get("error") or not clips_path.is_file():
        return None  # failures are retried: a fixed permission or file should count next time
    return result


# --------------------------------------------------------------------------------------------------
# assembling


def assemble(folder: Path, key: str, results: list[dict], class_names: list[str],
             settings: ClipSettings, report: dict) -> int:
    """Concatenate the parts of ``results`` (in order) into the final cache; marker last. Returns N."""
    usable = [(i, r) for i, r in enumerate(results) if not r.get("error") and r["starts"]]
    total = sum(len(r["starts"]) for _, r in usable)
    (folder / MARKER).unlink(missing_ok=True)
    shape = (total, settings.frames, settings.resolution, settings.resolution, 3)
    tmp_clips = folder / "clips.npy.tmp"
    out = np.lib.format.open_memmap(tmp_clips, mode="w+", dtype=np.uint8, shape=shape)
    labels = np.empty(total, dtype=np.int64)
    manifest, row = [], 0
    for index, result in usable:
        part = np.load(part_paths(folder, index)[0], mmap_mode="r")
        out[row: row + len(part)] = part
        labels[row: row + len(part)] = result["label"]
        manifest += [{"source": result["source"], "start": s, "fps": result["fps"]} for s in result["starts"]]
        row += len(part)
    out.flush()
    del out
    os.replace(tmp_clips, folder / "clips.npy")
    with open(folder / "labels.npy.tmp", "wb") as f:
        np.save(f, labels)
    os.replace(folder / "labels.npy.tmp", folder / "labels.npy")
    write_json(folder / "meta.json", {"version": CACHE_VERSION, "key": key, "settings": asdict(settings),
                                      "class_names": class_names, "num_clips": total, "manifest": manifest})
    write_json(folder / "prepare_report.json", report)
    write_atomic(folder / MARKER, key.encode())
    shutil.rmtree(folder / "parts", ignore_errors=True)
    return total


# --------------------------------------------------------------------------------------------------
# reading


def _npy_layout(path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """Shape, dtype and data offset of a C-ordered .npy file."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        shape, fortran, dtype = read_header(f)
        if fortran:
            raise ValueError(f"{path} is Fortran-ordered; the cache writes C order")
        return shape, dtype, f.tell()


def _read_exactly(fd: int, buf: memoryview, pos: int, path: Path) -> None:
    got = 0
    while got < len(buf):
        read = os.preadv(fd, [buf[got:]], pos + got)
        if read == 0:
            raise OSError(f"{path} is shorter than its header says (truncated cache?)")
        got += read


class ClipStore:
    """Clips ``uint8 [N, T, H, W, 3]`` of a cache's ``clips.npy``, read on demand with ``os.pread``.

    Holds only the file name between reads (and pickles as such, for DataLoader workers); a batch
    is one buffer filled by one read per run of consecutive indices.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self._fd: int | None = None
        self._pid = -1
        self.shape, dtype, self.offset = _npy_layout(self.path)
        if dtype != np.uint8 or len(self.shape) != 5:
            raise ValueError(f"{self.path} is not a clip cache (uint8 [N, T, H, W, 3]); "
                             f"got {dtype} {self.shape}")
        self.clip_bytes = int(np.prod(self.shape[1:]))

    def __len__(self) -> int:
        return self.shape[0]

    def __getstate__(self):
        return {**self.__dict__, "_fd": None, "_pid": -1}

    def __del__(self):
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)

    def _file(self) -> int:
        if self._fd is None or self._pid != os.getpid():  # a forked worker opens its own descriptor
            self._fd, self._pid = os.open(self.path, os.O_RDONLY), os.getpid()
        return self._fd

    def take(self, indices) -> np.ndarray:
        """Clips ``indices`` (ints in ``[-N, N)``) as a new array ``[len(indices), T, H, W, 3]``."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = len(self)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise IndexError(f"clip index out of range for a cache of {n} clips")
        idx = np.where(idx < 0, idx + n, idx)
        out = np.empty((idx.size, *self.shape[1:]), dtype=np.uint8)
        flat = out.reshape(idx.size, self.clip_bytes)
        fd, start = self._file(), 0
        while start < idx.size:  # one read per run of consecutive indices
            stop = start + 1
            while stop < idx.size and idx[stop] == idx[stop - 1] + 1:
                stop += 1
            buf = memoryview(flat[start:stop]).cast("B")
            pos = self.offset + int(idx[start]) * self.clip_bytes
            _read_exactly(fd, buf, pos, self.path)
            start = stop
        return out

    def __getitem__(self, index: int) -> np.ndarray:
        return self.take([index])[0]


@dataclass
class OpenCache:
    clips: ClipStore
    labels: np.ndarray
    class_names: list[str]
    meta: dict


def open_cache(folder: Path, key: str) -> OpenCache | None:
    """The cache in ``folder`` if it is complete for ``key`` and consistent, else None."""
    if not is_complete(folder, key):
        return None
    try:
        meta = json.loads((folder / "meta.json").read_text())
        clips = ClipStore(folder / "clips.npy")
        labels = np.load(folder / "labels.npy")
    except (OSError, ValueError):
        return None
    if len(labels) != len(clips) or meta.get("num_clips") != len(clips):
        return None
    return OpenCache(clips, labels, list(meta["class_names"]), meta)
