"""Shared helpers of the scripts/bench_*.py benchmarks: timing, medians, tables, JSON, machine peak.

The machine is shared, so every figure is a median of repeats, every table says the load average
when it was measured, and throughput is compared with a peak measured in the same process, a few
seconds apart (a busy neighbour then lowers both sides of the ratio).
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
# A 64->64 channel 3x3x3 convolution over 16x32x32 clips: the shape where oneDNN runs closest to the
# machine's limit here (both precisions, channels_last_3d), and about 0.1-0.5 s per fwd+bwd.
PEAK_CONV_INPUT = (4, 64, 16, 32, 32)
PEAK_MATMUL_N = 2048
VIDEO_SOURCES = ("testsrc2", "mandelbrot", "life", "smptebars")  # ffmpeg's lavfi generators


def load_avg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict:
    """What a reader needs to compare two runs of a benchmark."""
    return {"torch": torch.__version__, "python": platform.python_version(),
            "threads": torch.get_num_threads(), "interop_threads": torch.get_num_interop_threads(),
            "cpu": cpu_model(), "cpus": os.cpu_count(), "load_avg": load_avg(),
            "time": time.strftime("%Y-%m-%d %H:%M:%S")}


def describe(env: dict) -> str:
    return (f"torch {env['torch']}, {env['threads']} threads, {env['cpu']} ({env['cpus']} CPUs), "
            f"load average {' / '.join(map(str, env['load_avg']))} (1/5/15 min)")


def median(values) -> float:
    return statistics.median(values)


def timed(fn: Callable[[], object], repeats: int, warmup: int = 1) -> list[float]:
    """Wall times in seconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (ru_maxrss is in KiB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(rss / (2**20 if sys.platform == "darwin" else 2**10), 1)


class _FlopCount(TorchDispatchMode):
    """Sum torch's FLOP formulas (``flop_registry``: matmuls and convolutions, forward and backward)
    over the ops that run. Like ``FlopCounterMode`` without its per-module tracking, whose backward
    hooks do not support ``autograd.grad(create_graph=True)`` (the R1/R2 penalties)."""

    def __init__(self):
        super().__init__()
        self.flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.flops += formula(*args, **kwargs, out_val=out)
        return out


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of the matmuls and convolutions ``fn`` runs (forward and backward), as torch counts them."""
    with _FlopCount() as counter:
        fn()
    return counter.flops


def rate(fn: Callable[[], object], repeats: int) -> float:
    """Best FLOP/s of ``fn`` over ``repeats`` calls: the best run is the machine's limit, not noise."""
    flops = count_flops(fn)
    return flops / min(timed(fn, repeats))


def matmul_rate(precision: str, repeats: int = 5, n: int = PEAK_MATMUL_N) -> float:
    a, b = (torch.randn(n, n, dtype=DTYPES[precision]) for _ in range(2))
    return rate(lambda: a @ b, repeats)


def conv3d_rate(precision: str, repeats: int = 5) -> float:
    """Forward + backward of a large Conv3d in channels_last_3d (the faster format here, both dtypes)."""
    dtype, fmt = DTYPES[precision], torch.channels_last_3d
    conv = torch.nn.Conv3d(PEAK_CONV_INPUT[1], PEAK_CONV_INPUT[1], 3, padding=1)
    conv = conv.to(dtype=dtype, memory_format=fmt)
    x = torch.randn(PEAK_CONV_INPUT, dtype=dtype).to(memory_format=fmt).requires_grad_(True)

    def step():
        out = conv(x)
        out.backward(torch.ones_like(out))
    return rate(step, repeats)


def machine_peak(precision: str, repeats: int = 5) -> dict:
    """The best of a large matmul and a large Conv3d fwd+bwd in ``precision``, in FLOP/s."""
    figures = {"matmul": matmul_rate(precision, repeats), "conv3d": conv3d_rate(precision, repeats)}
    return {**figures, "peak": max(figures.values()), "precision": precision, "load_avg": load_avg()}


def print_table(rows: list[dict], columns: list[tuple[str, str]], title: str = "") -> None:
    """Print ``rows`` as a plain-text table; ``columns`` is ``[(key, heading), ...]``."""
    cells = [[heading for _, heading in columns]]
    cells += [["" if row.get(key) is None else str(row.get(key)) for key, _ in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    if title:
        print(title)
    for n, line in enumerate(cells):
        print("  ".join(cell.rjust(w) if n and i else cell.ljust(w)
                        for i, (cell, w) in enumerate(zip(line, widths, strict=True))))
        if n == 0:
            print("  ".join("-" * w for w in widths))


def write_json(path: str | os.PathLike, payload: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {path}")
    return path


def compose(config_name: str, overrides: list[str]):
    """Compose a vidgan config the way the CLI does (the packaged conf/ plus the structured schema)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    from vidgan_cli.config import register_configs

    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_module("vidgan_cli.conf", version_base="1.3"):
        return hydra_compose(config_name, overrides=list(overrides))


def make_video_folder(root: Path, videos: int, frames: int, size: str = "320x240") -> Path:
    """A UCF-101-style folder (3 class folders) of H.264 test videos made by the ffmpeg that
    imageio-ffmpeg ships (lavfi generators: no downloads)."""
    import imageio_ffmpeg
    for i in range(videos):
        path = root / f"Class{i % 3}" / f"v_{i:03d}.mp4"
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "lavfi", "-i",
                        f"{VIDEO_SOURCES[i % len(VIDEO_SOURCES)]}=size={size}:rate=25", "-frames:v",
                        str(frames), "-c:v", "libx264", "-pix_fmt", "yuv420p", "-preset", "fast", str(path)],
                       check=True)
    return root
