"""Benchmark the real-video data path: prepare throughput, loader throughput, RSS while iterating.

    python scripts/bench_data.py [--videos 24] [--source-frames 96] [--cache-clips 2000 8000] [--json out.json]

1. prepare: decode a folder of 320x240 clips into a 16x64x64 cache with 1 and with N workers
   (source frames decoded per second, and per worker).
2. loader: clips/s from the cache through a DataLoader (batch 16, __getitems__ + collate_batched).
3. RSS: iterate every clip of synthetic caches of growing size, once through ClipStore (pread, what
   the dataset uses) and once through np.load(mmap_mode="r"), and report RSS before/after.
Prints a table and writes the figures as JSON.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from vidgan_cli.data import collate_batched
from vidgan_cli.data.cache import ClipStore
from vidgan_cli.data.video_folder import VideoFolderDataset
from vidgan_cli.prepare import prepare_video_folder

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib  # noqa: E402

CLIP = (16, 64, 64, 3)


def bench_prepare(root: Path, videos: int, frames: int, workers: int, cache: Path) -> dict:
    start = time.perf_counter()
    prepare_video_folder(root=root, frames=16, resolution=64, cache_dir=cache, workers=workers, progress=False)
    seconds = time.perf_counter() - start
    per_s = videos * frames / seconds
    return {"workers": workers, "seconds": round(seconds, 2), "frames_per_s": round(per_s),
            "frames_per_s_per_worker": round(per_s / max(workers, 1))}


def bench_loader(root: Path, cache: Path, epochs: int = 20) -> dict:
    data = VideoFolderDataset(root=str(root), frames=16, resolution=64, cache_dir=str(cache), auto_prepare=False)
    loader = DataLoader(data, batch_size=16, shuffle=True, collate_fn=collate_batched, drop_last=True)
    clips = 0
    start = time.perf_counter()
    for _ in range(epochs):
        for batch, _labels in loader:
            clips += len(batch)
    seconds = time.perf_counter() - start
    return {"cache_clips": len(data), "clips_per_s": round(clips / seconds), "batch": 16}


def rss_mb() -> dict:
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile"):
            fields[key] = round(int(value.split()[0]) / 1024, 1)
    return fields


def bench_rss(folder: Path, n: int, reader: str) -> dict:
    path = folder / f"clips_{n}.npy"
    if not path.exists():
        out = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(n, *CLIP))
        rng = np.random.default_rng(0)
        block = rng.integers(0, 256, (64, *CLIP), dtype=np.uint8)
        for i in range(0, n, 64):
            out[i: i + 64] = block[: min(64, n - i)]
        out.flush()
        del out
    gc.collect()
    before = rss_mb()
    store = ClipStore(path) if reader == "pread" else np.load(path, mmap_mode="r")
    order = np.random.default_rng(1).permutation(n)
    start = time.perf_counter()
    for i in range(0, n - 15, 16):
        idx = np.sort(order[i: i + 16])
        batch = store.take(idx) if reader == "pread" else store[idx]
        torch.from_numpy(batch)
    seconds = time.perf_counter() - start
    after = rss_mb()
    del store
    return {"reader": reader, "cache_clips": n, "cache_mb": round(path.stat().st_size / 2**20),
            "clips_per_s": round(n / seconds), "rss_before_mb": before["VmRSS"], "rss_after_mb": after["VmRSS"],
            "rss_file_after_mb": after.get("RssFile"), "rss_anon_after_mb": after.get("RssAnon")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=24)
    parser.add_argument("--source-frames", type=int, default=96)
    parser.add_argument("--cache-clips", type=int, nargs="+", default=[2000, 8000])
    parser.add_argument("--json", type=Path, default=Path("bench_data.json"))
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        benchlib.make_video_folder(tmp / "videos", args.videos, args.source_frames)
        prep = [bench_prepare(tmp / "videos", args.videos, args.source_frames, w, tmp / f"cache{w}")
                for w in sorted({1, cores})]
        loader = bench_loader(tmp / "videos", tmp / "cache1")
        rss = [bench_rss(tmp, n, reader) for n in args.cache_clips for reader in ("pread", "memmap")]

    print(f"prepare: {args.videos} videos x {args.source_frames} frames of 320x240 -> clips of 16x64x64")
    print(f"{'workers':>8} {'seconds':>8} {'frames/s':>9} {'per worker':>11}")
    for p in prep:
        print(f"{p['workers']:>8} {p['seconds']:>8.2f} {p['frames_per_s']:>9} {p['frames_per_s_per_worker']:>11}")
    print(f"\nloader: {loader['clips_per_s']} clips/s at batch 16 of 16x64x64 ({loader['cache_clips']} clips "
          "cached)")
    print(f"\n{'reader':>7} {'clips':>6} {'MB':>6} {'clips/s':>8} {'RSS before':>11} {'RSS after':>10} "
          f"{'file':>7} {'anon':>7}")
    for r in rss:
        print(f"{r['reader']:>7} {r['cache_clips']:>6} {r['cache_mb']:>6} {r['clips_per_s']:>8} "
              f"{r['rss_before_mb']:>11} {r['rss_after_mb']:>10} {r['rss_file_after_mb']:>7} "
              f"{r['rss_anon_after_mb']:>7}")
    result = {"machine": platform.platform(), "cores": cores, "prepare": prep, "loader": loader, "rss": rss}
    args.json.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
