"""Benchmark MP4 writing and reading per backend (PyAV in-process vs the imageio-ffmpeg subprocess).

    python scripts/bench_video_io.py [--sizes 64 128 256] [--frames 16] [--repeats 5] [--json out.json]

For each source size it times, per 16-frame clip: write_video, read_video at full size, and the
prepare path (decode scaled to 64 px while decoding). Prints a table and writes the figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import imageio_ffmpeg
import numpy as np

from vidgan_cli import video_io

BACKENDS = ("pyav", "imageio")


def source_clip(size: int, frames: int, folder: Path) -> np.ndarray:
    """Realistic moving content: ffmpeg's testsrc2 at ``size`` x ``size``, decoded to RGB."""
    path = folder / f"src_{size}.mp4"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "lavfi", "-i",
                    f"testsrc2=size={size}x{size}:rate=16", "-frames:v", str(frames), "-c:v", "libx264",
                    "-pix_fmt", "yuv420p", str(path)], check=True)
    return video_io.read_video(path)


def timed(fn, repeats: int) -> float:
    """Median wall time of ``fn()`` in milliseconds (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def bench_size(size: int, frames: int, repeats: int, folder: Path) -> list[dict]:
    clip = source_clip(size, frames, folder)
    rows = []
    for backend in BACKENDS:
        out = folder / f"{backend}_{size}.mp4"
        write_ms = timed(lambda b=backend, o=out: video_io.write_video(o, clip, 16, backend=b), repeats)
        read_ms = timed(lambda b=backend, o=out: video_io.read_video(o, backend=b), repeats)
        small_ms = timed(lambda b=backend, o=out: list(video_io.iter_frames(o, size=(64, 64), backend=b)),
                         repeats)
        rows.append({"backend": backend, "size": size, "frames": frames, "write_ms": round(write_ms, 2),
                     "read_ms": round(read_ms, 2), "read_scaled_to_64_ms": round(small_ms, 2)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, default=Path("bench_video_io.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [row for size in args.sizes for row in bench_size(size, args.frames, args.repeats, Path(tmp))]
    header = f"{'size':>6} {'backend':>8} {'write ms':>9} {'read ms':>8} {'read->64 ms':>12}   (per {args.frames}-frame clip)"
    print(header)
    for r in rows:
        print(f"{r['size']:>6} {r['backend']:>8} {r['write_ms']:>9.1f} {r['read_ms']:>8.1f} "
              f"{r['read_scaled_to_64_ms']:>12.1f}")
    for size in args.sizes:
        av_row, io_row = (next(r for r in rows if r["size"] == size and r["backend"] == b) for b in BACKENDS)
        print(f"{size:>6}  pyav speed-up: write x{io_row['write_ms'] / av_row['write_ms']:.1f}, "
              f"read x{io_row['read_ms'] / av_row['read_ms']:.1f}")
    result = {"machine": platform.platform(), "python": platform.python_version(), "rows": rows}
    args.json.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
