"""Benchmark one full training step (D step + G step) against the machine's own limit.

    python scripts/bench_train.py [--steps 10] [--warmup 3] [--rounds 1] [--configs default,quickstart,cache]
        [--variants fp32,cl,bf16,bf16_cl,compile,best] [--threads N] [--out bench_train.json]

Configs: ``default`` (cgan3d, 16x64x64, batch 16, on the embedded shapes), ``quickstart``
(experiment=quickstart: 16x32x32) and ``cache`` (the default model on real videos: ffmpeg test
videos decoded once into a clip cache before anything is timed, so its data wait is the cache's).
For each config and variant it builds the Trainer the real way (Hydra compose API + Trainer) and times
its real step functions: fetch a batch from ``iter(trainer.loader)`` (timed apart: the data wait),
``_to_video``, ``_condition``, ``d_step``, ``g_step``. Lazy R1/R2 make every ``reg_every``-th step
dearer, so steps are timed in whole cycles and a step's figures are cycle averages: it reports the
median over cycles of the mean step time (and apart: the medians of plain steps and of steps with
the penalty), clips/s, the FLOPs of a step averaged over one cycle
(torch's ``flop_registry``: matmuls and convolutions, fwd and bwd), the achieved
FLOP/s, the machine's peak in the step's precision (best of a large matmul and a large Conv3d
fwd+bwd, measured in the same process right after the steps), their ratio, the data-wait share,
the optimizer updates whose gradients were not finite (bf16 kernels can make them) and the peak
RSS. Every variant runs in its own process, so its peak RSS and compile caches are its own;
``--rounds`` repeats the sweep (every other round backwards) and pools the steps, which is what makes
figures comparable on a shared machine. The compile variants include their compile time in the
"1st step" column (a cold inductor cache costs much more than a warm one).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib  # noqa: E402

CONFIGS = {
    "default": [],                           # cgan3d, 16x64x64, batch 16, 4 shape classes, default loss
    "quickstart": ["experiment=quickstart"],  # the README's first run: 16x32x32, batch 16
    # the default model on real videos read from a prepared cache (test videos made with ffmpeg,
    # decoded once by `vidgan prepare` before any step is timed); the root is added at run time
    "cache": ["dataset=video_folder", "dataset.auto_prepare=false"],
}
CACHE_VIDEOS, CACHE_SOURCE_FRAMES = 12, 160  # 3 classes, 120 clips of 16 frames
# Every variant sets all three keys: the config's own defaults (e.g. channels_last on) must not leak in.
VARIANTS = {
    "fp32": ["trainer.precision=fp32", "trainer.channels_last=false", "trainer.compile=false"],
    "cl": ["trainer.precision=fp32", "trainer.channels_last=true", "trainer.compile=false"],
    "bf16": ["trainer.precision=bf16", "trainer.channels_last=false", "trainer.compile=false"],
    "bf16_cl": ["trainer.precision=bf16", "trainer.channels_last=true", "trainer.compile=false"],
    "compile": ["trainer.precision=fp32", "trainer.channels_last=false", "trainer.compile=true"],
    "best": ["trainer.precision=bf16", "trainer.channels_last=true", "trainer.compile=true"],
}
COLUMNS = [("config", "config"), ("variant", "variant"), ("step_ms", "step ms"),
           ("best_round_ms", "best rnd ms"), ("plain_step_ms", "plain ms"), ("penalty_step_ms", "R1/R2 ms"),
           ("clips_per_s", "clips/s"), ("gflop_per_step", "GFLOP/step"),
           ("gflops", "GFLOP/s"), ("peak_gflops", "peak GFLOP/s"), ("precision", "prec"),
           ("of_peak_pct", "% peak"), ("best_round_of_peak_pct", "% (best rnd)"),
           ("data_wait_pct", "wait %"), ("bad_updates", "non-finite"), ("peak_rss_mb", "RSS MB"),
           ("first_step_s", "1st step s"), ("load_1min", "load")]


def overrides(config: str, variant: str, video_root: str | None) -> list[str]:
    extra = [f"dataset.root={video_root}"] if config == "cache" else []
    return CONFIGS[config] + extra + VARIANTS[variant] + ["trainer.device=cpu"]


def prepare_cache(root: Path) -> None:
    """Test videos and their clip cache, made once for every variant of the cache config."""
    from vidgan_cli.prepare import prepare_video_folder
    benchlib.make_video_folder(root, CACHE_VIDEOS, CACHE_SOURCE_FRAMES)
    cfg = benchlib.compose("train", overrides("cache", "fp32", str(root)))
    prepare_video_folder(root=str(root), frames=cfg.dataset.frames, resolution=cfg.dataset.resolution,
                         progress=False)


def build_trainer(config: str, variant: str, run_dir: str, video_root: str | None = None):
    from vidgan_cli.train.trainer import Trainer
    cfg = benchlib.compose("train", overrides(config, variant, video_root))
    trainer = Trainer(cfg, run_dir=run_dir)
    trainer._d_updates = 0  # fit() sets it; the lazy-regularisation schedule counts from here
    return trainer


def make_step(trainer):
    """One training step as Trainer.fit runs it; returns (data wait, whole step) in seconds."""
    batches = iter(trainer.loader)

    def step() -> tuple[float, float]:
        start = time.perf_counter()
        clips, labels = next(batches)
        fetched = time.perf_counter()
        real, y = trainer._to_video(clips), trainer._condition(labels)
        trainer.d_step(real, y)
        trainer.g_step(real, y)
        return fetched - start, time.perf_counter() - start
    return step


def count_bad_updates(trainer) -> list[int]:
    """Count optimizer updates whose gradients are not finite (bf16 kernels can make them); returns
    the live counter [bad, total]. With nan_policy=skip it counts the trainer's own check; otherwise
    it adds that check (one gradient norm per update) in front of every update."""
    counter = [0, 0]
    finite = trainer._finite

    def checked(opt, loss) -> bool:
        ok = finite(opt, loss)
        counter[0] += not ok
        counter[1] += 1
        return ok
    trainer._finite = checked
    if trainer.t.nan_policy != "skip":  # the trainer checks nothing per update then
        update = trainer._optimizer_step

        def check_then_update(opt, scaler, loss):
            checked(opt, loss)
            update(opt, scaler, loss)
        trainer._optimizer_step = check_then_update
    return counter


def cycle_length(trainer) -> int:
    """Steps after which the step sequence repeats: lazy R1/R2/GP run on every ``reg_every``-th D
    step, so a figure per step is only honest as an average over whole cycles."""
    return trainer.loss.reg_every if trainer.loss.regularized else 1


def cycle_flops(trainer, step, cycle: int) -> float:
    """FLOPs per step averaged over one whole cycle of real steps, counted on the eager modules
    (a compiled graph hides its ops)."""
    compiled = trainer.G_train, trainer.D_train, trainer.D_fwd
    trainer.G_train, trainer.D_train, trainer.D_fwd = trainer.G, trainer.D, trainer.D
    try:
        return benchlib.count_flops(lambda: [step() for _ in range(cycle)]) / cycle
    finally:
        trainer.G_train, trainer.D_train, trainer.D_fwd = compiled


def run_variant(config: str, variant: str, steps: int, warmup: int, video_root: str | None) -> dict:
    """Raw figures of one (config, variant), all measured in this process."""
    import torch
    from omegaconf import OmegaConf
    with tempfile.TemporaryDirectory(prefix="bench_train_") as run_dir:
        built = time.perf_counter()
        trainer = build_trainer(config, variant, run_dir, video_root)
        build_s = time.perf_counter() - built
        precision = trainer.t.precision
        step = make_step(trainer)
        bad_updates = count_bad_updates(trainer)
        cycle = cycle_length(trainer)
        warm = [step()[1] for _ in range(warmup)]
        while trainer._d_updates % cycle:  # start the timed steps at the start of a cycle
            warm.append(step()[1])
        load = benchlib.load_avg()
        timings = [step() for _ in range(-(-steps // cycle) * cycle)]  # whole cycles
        rss = benchlib.peak_rss_mb()  # before the peak kernels allocate (and move glibc's mmap threshold)
        flops = cycle_flops(trainer, step, cycle)
        peak = benchlib.machine_peak(precision)
    return {"config": config, "variant": variant, "overrides": CONFIGS[config] + VARIANTS[variant],
            "dataset": trainer.cfg.dataset._target_.rsplit(".", 1)[-1], "dataset_clips": len(trainer.dataset),
            "clip": [trainer.cfg.dataset.frames, trainer.cfg.dataset.resolution,
                     trainer.cfg.dataset.resolution],
            "batch_size": trainer.t.batch_size, "precision": precision, "flops": flops,
            "loss": OmegaConf.to_container(trainer.cfg.loss, resolve=True),
            "nan_policy": trainer.t.nan_policy, "bad_updates": bad_updates, "cycle": cycle,
            "steps_s": [t for _, t in timings], "waits_s": [w for w, _ in timings], "warmup_s": warm,
            "build_s": build_s, "peak": peak, "peak_rss_mb": rss, "load_avg": load,
            "threads": torch.get_num_threads()}


def cycle_means(run: dict) -> list[float]:
    """Mean step time of each whole cycle of a run (a cycle = reg_every steps, one of them with R1/R2)."""
    n, times = run["cycle"], run["steps_s"]
    return [sum(times[i:i + n]) / n for i in range(0, len(times) - n + 1, n)]


def split_steps(runs: list[dict]) -> tuple[list[float], list[float]]:
    """Step times of all runs split into (plain steps, steps with the lazy penalty): a run's timed
    steps start a cycle, so the penalised ones are the first of every cycle."""
    plain, penalised = [], []
    for r in runs:
        for i, t in enumerate(r["steps_s"]):
            (penalised if r["cycle"] > 1 and i % r["cycle"] == 0 else plain).append(t)
    return plain, penalised


def summarise(runs: list[dict]) -> dict:
    """One table row from the runs (rounds) of a (config, variant): the median over all their cycles
    of the mean step time in a cycle, and the best round (lowest such median; its own peak), i.e. the
    round a neighbour disturbed least."""
    first = runs[0]
    totals = [t for r in runs for t in r["steps_s"]]
    waits = [w for r in runs for w in r["waits_s"]]
    step_s, flops = benchlib.median([c for r in runs for c in cycle_means(r)]), first["flops"]
    best = min(runs, key=lambda r: benchlib.median(cycle_means(r)))
    best_s, peak = benchlib.median(cycle_means(best)), best["peak"]
    return {
        **{k: first[k] for k in ("config", "variant", "overrides", "dataset", "dataset_clips", "clip",
                                 "batch_size", "precision", "loss", "nan_policy", "threads")},
        "rounds": len(runs), "cycle": first["cycle"], "step_ms": round(1e3 * step_s, 1),
        "best_round_ms": round(1e3 * best_s, 1),
        **{key: round(1e3 * benchlib.median(times), 1) if times else None
           for key, times in zip(("plain_step_ms", "penalty_step_ms"), split_steps(runs), strict=True)},
        "clips_per_s": round(first["batch_size"] / step_s, 1), "gflop_per_step": round(flops / 1e9, 2),
        "gflops": round(flops / step_s / 1e9, 1), "peak_gflops": round(peak["peak"] / 1e9, 1),
        "peak_matmul_gflops": round(peak["matmul"] / 1e9, 1),
        "peak_conv3d_gflops": round(peak["conv3d"] / 1e9, 1),
        "of_peak_pct": round(100 * flops / step_s / peak["peak"], 1),
        "best_round_of_peak_pct": round(100 * flops / best_s / peak["peak"], 1),
        "data_wait_pct": round(100 * sum(waits) / sum(totals), 1),
        "bad_updates": f"{sum(r['bad_updates'][0] for r in runs)}/{sum(r['bad_updates'][1] for r in runs)}",
        "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
        "first_step_s": round(first["warmup_s"][0], 2) if first["warmup_s"] else None,
        "load_1min": round(benchlib.median([r["load_avg"][0] for r in runs]), 2),
        "runs": [{k: r[k] for k in ("steps_s", "waits_s", "warmup_s", "build_s", "peak", "peak_rss_mb",
                                    "load_avg")} for r in runs],
    }


def child(args) -> None:
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    result = run_variant(args.child[0], args.child[1], args.steps, args.warmup, args.video_root)
    print("RESULT " + json.dumps(result), flush=True)


def spawn(config: str, variant: str, args) -> dict | None:
    cmd = [sys.executable, __file__, "--child", config, variant, "--steps", str(args.steps),
           "--warmup", str(args.warmup)] + (["--threads", str(args.threads)] if args.threads else [])
    if args.video_root:
        cmd += ["--video-root", args.video_root]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        print(f"  {config} {variant}: failed (exit {proc.returncode}): {last}", file=sys.stderr)
        return None
    return json.loads(lines[-1][len("RESULT "):])


def parse_list(text: str, allowed) -> list[str]:
    items = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in items if s not in allowed]
    if unknown:
        raise SystemExit(f"unknown {unknown}; choose from {', '.join(allowed)}")
    return items


def sweep(configs: list[str], variants: list[str], args) -> list[dict]:
    """Every (config, variant) once per round, each in its own process; one summary row per pair."""
    pairs = [(c, v) for c in configs for v in variants]
    runs: dict[tuple[str, str], list[dict]] = {pair: [] for pair in pairs}
    for r in range(args.rounds):
        # Every other round runs backwards, so a slow drift of the load does not favour one end.
        for config, variant in pairs if r % 2 == 0 else pairs[::-1]:
            run = spawn(config, variant, args)
            if run:
                runs[(config, variant)].append(run)
                ms = 1e3 * benchlib.median(cycle_means(run))
                print(f"  round {r + 1}: {config:<10} {variant:<8} {ms:8.1f} ms/step  "
                      f"(load {run['load_avg'][0]})", flush=True)
    return [summarise(runs[pair]) if runs[pair] else {"config": pair[0], "variant": pair[1], "error": "failed"}
            for pair in pairs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=12,
                        help="timed steps per variant, rounded up to whole R1/R2 cycles")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (compile happens here)")
    parser.add_argument("--configs", default="default,quickstart,cache")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="repeat the sweep (alternating order); steps of all rounds are pooled")
    parser.add_argument("--out", default="bench_train.json")
    parser.add_argument("--child", nargs=2, metavar=("CONFIG", "VARIANT"), help=argparse.SUPPRESS)
    parser.add_argument("--video-root", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    configs, variants = parse_list(args.configs, CONFIGS), parse_list(args.variants, VARIANTS)

    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    env = benchlib.environment()
    print(f"bench_train: {benchlib.describe(env)}")
    print(f"{args.steps} timed steps after {args.warmup} warm-up steps, {args.rounds} round(s); "
          "one process per variant and round\n")
    with tempfile.TemporaryDirectory(prefix="bench_train_videos_") as video_root:
        if "cache" in configs:
            print(f"preparing the cache config's videos ({CACHE_VIDEOS} test videos of "
                  f"{CACHE_SOURCE_FRAMES} frames) ...", flush=True)
            prepare_cache(Path(video_root))
            args.video_root = video_root
        rows = sweep(configs, variants, args)
    for config in configs:
        row = next((r for r in rows if r["config"] == config and "loss" in r), None)
        if row:
            loss = row["loss"]
            print(f"  {config}: loss {loss['kind']} (r1 {loss['r1_gamma']}, r2 {loss['r2_gamma']}, "
                  f"gp {loss['gp_weight']}, reg_every {loss['reg_every']}, n_critic {loss['n_critic']}), "
                  f"clips {row['clip']}, batch {row['batch_size']}, nan_policy {row['nan_policy']}, "
                  f"data {row['dataset']} ({row['dataset_clips']} clips)")
    env_after = {"load_avg_after": benchlib.load_avg()}
    print()
    benchlib.print_table(rows, COLUMNS, title="full training step (D step + G step), median of all steps "
                         "and of the best round; % peak = achieved FLOP/s / peak in the step's precision, "
                         "same process")
    print(f"\nload average after: {' / '.join(map(str, env_after['load_avg_after']))}")
    benchlib.write_json(args.out, {"benchmark": "train_step", "environment": {**env, **env_after},
                                   "steps": args.steps, "warmup": args.warmup, "rounds": args.rounds,
                                   "results": rows})


if __name__ == "__main__":
    main()
