"""Benchmark ``vidgan generate`` end to end and phase by phase, and the start-up cost of ``vidgan --help``.

    python scripts/bench_generate.py [--num-videos 16] [--repeats 3] [--help-repeats 5] [--out bench_generate.json]

1. A checkpoint of the default cgan3d (16x64x64, 4 classes) from a 1-step training run through the
   real Trainer, written in a temp dir.
2. End to end: the subprocess ``vidgan generate ckpt=... condition=all num_videos=16`` (4 classes x 16
   = 64 clips plus the grid), median of ``--repeats`` runs.
3. In process, the same call of ``vidgan_cli.generate.generate`` with its phases timed by wrapping the
   functions it calls: checkpoint load + generator build, sampling, encoding the clips to MP4, the grid
   (MP4 + GIF + PNG); "other" is the rest (to_uint8, checks). The start-up a subprocess adds on top
   is the import of torch + vidgan_cli.generate (timed in a fresh interpreter) and Hydra's set-up.
4. ``vidgan --help``: median of ``--help-repeats`` subprocess runs.
Targets: 64 clips to MP4 in < 10 s end to end; ``vidgan --help`` < 1.5 s.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib  # noqa: E402

TARGET_E2E_S, TARGET_HELP_S = 10.0, 1.5
# What a `vidgan generate` process imports before it samples, timed module by module (in this order,
# so each figure is what that import adds); av is optional (PyAV backend).
IMPORT_PROBE = """
import importlib, json, time
times = {}
for name in ("torch", "vidgan_cli.generate", "vidgan_cli.train.checkpoint", "av", "imageio.v3"):
    start = time.perf_counter()
    try:
        importlib.import_module(name)
    except ImportError:
        continue
    times[name] = time.perf_counter() - start
print(json.dumps(times))
"""


def vidgan_command() -> list[str]:
    """The console script next to this interpreter (what a user runs), else ``python -m vidgan_cli``."""
    script = Path(sys.executable).with_name("vidgan")
    found = str(script) if script.exists() else shutil.which("vidgan")
    return [found] if found else [sys.executable, "-m", "vidgan_cli"]


def make_checkpoint(folder: Path) -> Path:
    """1 step of the default cgan3d at 16x64x64 through the real Trainer; returns last.ckpt."""
    from vidgan_cli.train.trainer import Trainer
    cfg = benchlib.compose("train", ["trainer.max_steps=1", "trainer.save_every=1", "trainer.device=cpu",
                                     "trainer.log_every=1"])
    Trainer(cfg, run_dir=folder).fit()
    return folder / "checkpoints" / "last.ckpt"


def run_timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - start


class Phases:
    """Wrap functions so their wall time adds up under a phase name; a call inside another timed call
    is recorded under its path, ``outer/inner`` (e.g. the grid's MP4 as ``grid/encode``)."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.stack: list[str] = []

    def wrap(self, name: str, fn):
        def timed(*args, **kwargs):
            key = "/".join([*self.stack, name])
            self.stack.append(name)
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.stack.pop()
                self.seconds[key] = self.seconds.get(key, 0.0) + time.perf_counter() - start
        return timed


def in_process(ckpt: Path, out_dir: Path, num_videos: int) -> dict:
    """One call of generate() with its phases timed (the real functions, wrapped in place)."""
    from vidgan_cli import generate as gen_mod
    from vidgan_cli import video_io
    from vidgan_cli.train import checkpoint

    phases = Phases()
    targets = {(checkpoint, "load_checkpoint"): "load", (checkpoint, "build_generator"): "load",
               (video_io, "write_video"): "encode", (gen_mod, "save_grid"): "grid",
               (video_io, "make_grid"): "tile", (video_io, "write_gif"): "gif",
               (video_io, "write_png_strip"): "png"}
    saved = {key: getattr(*key) for key in targets}
    build = saved[(checkpoint, "build_generator")]

    def build_and_wrap(*args, **kwargs):
        G = build(*args, **kwargs)
        G.sample = phases.wrap("sample", G.sample)
        return G
    for (mod, name), phase in targets.items():
        fn = build_and_wrap if name == "build_generator" else saved[(mod, name)]
        setattr(mod, name, phases.wrap(phase, fn))
    try:
        cfg = benchlib.compose("generate", [f"ckpt={ckpt}", "condition=all", f"num_videos={num_videos}",
                                            "device=cpu"])
        start = time.perf_counter()
        written = gen_mod.generate(cfg, out_dir)
        total = time.perf_counter() - start
    finally:
        for (mod, name), fn in saved.items():
            setattr(mod, name, fn)
    clips = sum(1 for p in written if p.suffix == ".mp4" and p.stem != "grid")
    top = {k: phases.seconds.get(k, 0.0) for k in ("load", "sample", "encode", "grid")}
    nested = {k: v for k, v in phases.seconds.items() if "/" in k}
    return {"total": total, **top, **nested, "other": total - sum(top.values()), "clips": clips}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-videos", type=int, default=16, help="clips per class (4 classes)")
    parser.add_argument("--repeats", type=int, default=3, help="end-to-end and in-process runs (median)")
    parser.add_argument("--help-repeats", type=int, default=5)
    parser.add_argument("--out", default="bench_generate.json")
    args = parser.parse_args()

    env = benchlib.environment()
    print(f"bench_generate: {benchlib.describe(env)}")
    vidgan = vidgan_command()
    with tempfile.TemporaryDirectory(prefix="bench_generate_") as tmp:
        tmp = Path(tmp)
        started = time.perf_counter()
        ckpt = make_checkpoint(tmp / "train")
        print(f"checkpoint from a 1-step run in {time.perf_counter() - started:.1f} s: {ckpt.name}")

        help_s = [run_timed(vidgan + ["--help"]) for _ in range(args.help_repeats)]
        imports = [json.loads(subprocess.run([sys.executable, "-c", IMPORT_PROBE], check=True, text=True,
                                             capture_output=True).stdout) for _ in range(args.repeats)]
        e2e = []
        for i in range(args.repeats):
            run = tmp / f"e2e_{i}"
            e2e.append(run_timed(vidgan + ["generate", f"ckpt={ckpt}", "condition=all",
                                           f"num_videos={args.num_videos}", f"out_dir={run / 'clips'}",
                                           "device=cpu", f"hydra.run.dir={run}"]))
        phases = [in_process(ckpt, tmp / f"inproc_{i}", args.num_videos) for i in range(args.repeats)]
    clips = phases[0]["clips"]

    med = {k: benchlib.median([p.get(k, 0.0) for p in phases]) for k in phases[0] if k != "clips"}
    imported = {k: benchlib.median([t.get(k, 0.0) for t in imports]) for k in imports[0]}
    e2e_s, help_med = benchlib.median(e2e), benchlib.median(help_s)
    rows = [
        {"what": "vidgan --help", "seconds": help_med, "target": TARGET_HELP_S},
        {"what": f"vidgan generate, {clips} clips + grid, end to end", "seconds": e2e_s,
         "target": TARGET_E2E_S},
        {"what": "  start-up (end to end - in-process generate())", "seconds": e2e_s - med["total"]},
        *({"what": f"    import {name}", "seconds": t} for name, t in imported.items()),
        {"what": "  generate() in process", "seconds": med["total"]},
        {"what": "    checkpoint load + build G", "seconds": med["load"]},
        {"what": "    sampling", "seconds": med["sample"]},
        {"what": f"    encoding {clips} clips to MP4", "seconds": med["encode"]},
        {"what": "    grid (tile + MP4 + GIF + PNG)", "seconds": med["grid"]},
        *({"what": f"      {name}", "seconds": t} for name, t in med.items() if "/" in name),
        {"what": "    other (to_uint8, checks)", "seconds": med["other"]},
    ]
    for row in rows:
        row["seconds"] = round(row["seconds"], 3)
        if row.get("target"):
            row["verdict"] = "ok" if row["seconds"] < row["target"] else "MISSED"
        if "encoding" in row["what"] and clips:
            row["per_clip_ms"] = round(1e3 * row["seconds"] / clips, 1)
    print()
    benchlib.print_table(rows, [("what", "phase"), ("seconds", "median s"), ("per_clip_ms", "ms/clip"),
                                ("target", "target s"), ("verdict", "")],
                         title=f"vidgan generate, medians of {args.repeats} runs (--help: {args.help_repeats})")
    load_after = benchlib.load_avg()
    print(f"\nload average after: {' / '.join(map(str, load_after))}")
    benchlib.write_json(args.out, {
        "benchmark": "generate", "environment": {**env, "load_avg_after": load_after},
        "command": vidgan, "clips": clips, "rows": rows,
        "runs": {"help_s": help_s, "import_s": imports, "end_to_end_s": e2e, "in_process": phases}})


if __name__ == "__main__":
    main()
