"""``vidgan prepare``: decode a folder of videos once into the clip cache the training loader reads.

    vidgan prepare dataset=video_folder dataset.root=~/ucf101 dataset.resolution=64 workers=8

Every video is decoded by a worker process (scaled while decoding, PyAV by default) and its clips
are stored as a part file; an interrupted prepare resumes from the parts already written. The parts
are then joined into one ``clips.npy`` and the ``COMPLETE`` marker is written last, so a cache that
looks valid always is. Files that cannot be used are skipped and listed in ``prepare_report.json``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import hydra
import numpy as np
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from vidgan_cli import video_io
from vidgan_cli.data import cache as cache_lib
from vidgan_cli.data.video_folder import VideoSource, scan_videos

log = logging.getLogger(__name__)

VIDEO_FOLDER_TARGET = "vidgan_cli.data.video_folder.VideoFolderDataset"


class SkipFile(ValueError):
    """A video that cannot give a clip; the message is the reason shown in the report."""


# --------------------------------------------------------------------------------------------------
# one file (runs in a worker process)


def clip_starts(num_frames: int, settings: cache_lib.ClipSettings) -> list[int]:
    """First frame of every clip of a video with ``num_frames`` frames."""
    last = num_frames - settings.span
    if last < 0:
        return []
    if settings.clips_per_video is None:
        return list(range(0, last + 1, settings.span))
    spread = np.linspace(0, last, settings.clips_per_video).round().astype(int)
    return sorted({int(s) for s in spread})


def scaled_size(width: int, height: int, resolution: int) -> tuple[int, int]:
    """``(width, height)`` with the short side equal to ``resolution`` (the aspect ratio kept)."""
    if width <= height:
        return resolution, max(resolution, round(height * resolution / width))
    return max(resolution, round(width * resolution / height)), resolution


def decode_clips(path: Path, settings: cache_lib.ClipSettings, backend: str = "auto"):
    """Clips ``uint8 [k, T, R, R, 3]`` of one video, their start frames and the video's fps.

    Raises :class:`SkipFile` for a video too short for one clip.
    """
    num_frames, height, width, fps = video_io.probe(path)
    starts = clip_starts(num_frames, settings)
    r, step = settings.resolution, settings.frame_stride
    wanted = {s + step * j: (c, j) for c, s in enumerate(starts) for j in range(settings.frames)}
    clips = np.empty((len(starts), settings.frames, r, r, 3), dtype=np.uint8)
    size = scaled_size(width, height, r)
    top, left = (size[1] - r) // 2, (size[0] - r) // 2
    decoded = 0
    if starts:
        for i, frame in enumerate(video_io.iter_frames(path, size=size, backend=backend)):
            decoded = i + 1
            if i in wanted:
                c, j = wanted[i]
                clips[c, j] = frame[top: top + r, left: left + r]
            if i >= starts[-1] + settings.span - 1:
                break
    # a header may promise more frames than decode: keep only the clips that were filled
    complete = [c for c, s in enumerate(starts) if s + settings.span - settings.frame_stride < decoded]
    if not complete:
        count = decoded if starts else num_frames
        raise SkipFile(f"too short: {count} frames; one clip needs frames x frame_stride = "
                         f"{settings.frames} x {settings.frame_stride} = {settings.span}")
    return clips[complete], [starts[c] for c in complete], fps


def prepare_one(job: tuple) -> dict:
    """Decode file ``index`` of a source into its part; returns the result (with ``error`` if unusable)."""
    folder, index, root, rel, label, settings, backend = job
    result = {"source": rel, "label": label, "starts": [], "fps": 0.0, "error": None}
    try:
        path = Path(root) / rel
        if path.stat().st_size == 0:
            raise SkipFile("empty file (0 bytes)")
        if not os.access(path, os.R_OK):
            raise SkipFile("no read permission")
        clips, starts, fps = decode_clips(path, settings, backend)
        result.update(starts=starts, fps=fps)
    except SkipFile as err:
        result["error"], clips = str(err), None
    except Exception as err:  # noqa: BLE001 - any decoder failure means "skip this file"
        result["error"], clips = f"cannot decode ({type(err).__name__}: {err})", None
    cache_lib.write_part(Path(folder), index, clips, result)
    return result


# --------------------------------------------------------------------------------------------------
# the whole cache


@contextlib.contextmanager
def _exclusive(folder: Path) -> Iterator[None]:
    """Hold a lock on ``folder`` so two processes (e.g. DDP ranks) never prepare it at once."""
    try:
        import fcntl
    except ImportError:  # no flock (Windows): one preparer is the user's job
        yield
        return
    with open(folder / ".lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run_jobs(jobs: list[tuple], workers: int, progress: bool, done: int, total: int) -> Iterator[tuple]:
    bar = tqdm(total=total, initial=done, desc="decoding videos", unit="file", disable=not progress)
    try:
        if workers <= 1:
            for job in jobs:
                yield job[1], prepare_one(job)
                bar.update()
            return
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = {pool.submit(prepare_one, job): job[1] for job in jobs}
            try:
                for future in as_completed(futures):
                    yield futures[future], future.result()
                    bar.update()
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)  # finished parts stay for the resume
                raise
    finally:
        bar.close()


def _report(source: VideoSource, results: list[dict], settings: cache_lib.ClipSettings) -> dict:
    skipped = [{"source": r["source"], "reason": r["error"]} for r in results if r["error"]]
    return {"root": str(source.root), "settings": settings.__dict__, "files": len(results),
            "usable_files": len(results) - len(skipped),
            "clips": sum(len(r["starts"]) for r in results), "skipped": skipped}


def build_cache(source: VideoSource, settings: cache_lib.ClipSettings, folder: Path, key: str, *,
                workers: int | None = None, force: bool = False, backend: str = "auto",
                progress: bool = True) -> Path:
    """Decode ``source`` into the cache ``folder`` (resuming finished files) unless it is complete."""
    video_io.resolve_backend(backend)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OSError(f"cannot create the cache folder {str(folder)!r} ({err}); set dataset.cache_dir "
                      "to a writable folder") from None
    with _exclusive(folder):
        if force:
            (folder / cache_lib.MARKER).unlink(missing_ok=True)
            shutil.rmtree(folder / "parts", ignore_errors=True)
        elif cache_lib.is_complete(folder, key):
            log.info("cache %s is complete for these settings: nothing to do (force=true rebuilds)", folder)
            return folder
        (folder / cache_lib.MARKER).unlink(missing_ok=True)
        results = [cache_lib.read_part_result(folder, i) for i in range(len(source.files))]
        done = sum(r is not None for r in results)
        if done:
            log.info("resuming: %d of %d files were decoded by an earlier run", done, len(results))
        jobs = [(str(folder), i, str(source.root), rel, source.labels[i], settings, backend)
                for i, rel in enumerate(source.files) if results[i] is None]
        workers = (os.cpu_count() or 1) if workers is None else workers
        for index, result in _run_jobs(jobs, min(workers, len(jobs)), progress, done, len(results)):
            results[index] = result
        report = _report(source, results, settings)
        _log_skipped(report)
        if report["clips"] == 0:
            cache_lib.write_json(folder / "prepare_report.json", report)
            reasons = _listing_reasons(report["skipped"])
            raise ValueError(f"no usable clips in {str(source.root)!r}: all {len(results)} video(s) were "
                             f"skipped ({reasons}); details in {folder / 'prepare_report.json'}")
        total = cache_lib.assemble(folder, key, results, source.class_names, settings, report)
    log.info("prepared %d clips of %dx%dx%d from %d of %d videos into %s", total, settings.frames,
             settings.resolution, settings.resolution, report["usable_files"], report["files"], folder)
    return folder


def _listing_reasons(skipped: list[dict], limit: int = 3) -> str:
    shown = "; ".join(f"{s['source']}: {s['reason']}" for s in skipped[:limit])
    return shown + (f"; ... {len(skipped) - limit} more" if len(skipped) > limit else "")


def _log_skipped(report: dict) -> None:
    if report["skipped"]:
        log.warning("skipped %d of %d videos: %s (all listed in prepare_report.json)",
                    len(report["skipped"]), report["files"], _listing_reasons(report["skipped"], 5))


def prepare_video_folder(*, root, frames: int = 16, resolution: int = 64, frame_stride: int = 1,
                         clips_per_video: int | None = None, split_file=None, classes=None, cache_dir=None,
                         backend: str = "auto", workers: int | None = None, force: bool = False,
                         progress: bool = True) -> Path:
    """Scan ``root`` as the video-folder dataset does and build its cache; returns the cache folder."""
    settings = cache_lib.ClipSettings(frames, frame_stride, resolution, clips_per_video)
    source = scan_videos(root, split_file, classes)
    key = cache_lib.settings_hash(settings, source.fingerprint(), source.labels, source.class_names)
    folder = cache_lib.cache_folder(source.root, cache_dir, key)
    return build_cache(source, settings, folder, key, workers=workers, force=force, backend=backend,
                       progress=progress)


def run(cfg: DictConfig) -> Path:
    """The body of ``vidgan prepare`` on a composed config."""
    data = cfg.dataset
    if data.get("_target_") != VIDEO_FOLDER_TARGET:
        raise ValueError(f"vidgan prepare decodes video folders (dataset=video_folder); the chosen "
                         f"dataset ({data.get('_target_')}) reads its files directly and needs no preparing")
    if cfg.workers is not None and cfg.workers < 0:
        raise ValueError(f"workers must be >= 0 (0: decode in this process) or null; got {cfg.workers}")
    kwargs = OmegaConf.to_container(data, resolve=True)
    for key in ("_target_", "auto_prepare", "num_classes"):
        kwargs.pop(key, None)
    return prepare_video_folder(**kwargs, workers=cfg.workers, force=cfg.force)


@hydra.main(config_path="pkg://vidgan_cli.conf", config_name="prepare", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run(cfg)
