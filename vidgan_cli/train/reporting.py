"""What a run writes besides checkpoints: metrics.jsonl, the console, sample grids, evals, summary.

Only rank 0 has a RunLogger.  Everything here reads the trainer's state and never changes training.
"""

from __future__ import annotations

import json
import logging
import sys
import time

import torch
from tqdm import tqdm

from vidgan_cli.config import ConfigError

log = logging.getLogger("vidgan_cli.train")


def count_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


class RunLogger:
    def __init__(self, trainer):
        self.tr = trainer
        self.run_dir = trainer.run_dir
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._forget_after(trainer.step)
        self.metrics = open(self.run_dir / "metrics.jsonl", "a", buffering=1)  # noqa: SIM115
        self.tensorboard = self._open_tensorboard() if trainer.cfg.logger.tensorboard else None
        self.started = self.last_tick = time.perf_counter()
        self.first_step = trainer.step
        self.last = {}
        self.warnings: list[str] = []
        interactive = sys.stderr.isatty()
        self.bar = tqdm(total=trainer.t.max_steps, initial=trainer.step, desc="train",
                        dynamic_ncols=True, disable=not interactive, leave=True)
        self.fixed_noise = self._fixed_noise()

    def _forget_after(self, step: int) -> None:
        """On resume, drop what a killed run logged after its last checkpoint (and a torn last
        line), so metrics.jsonl reads as one uninterrupted run; also drop stale checkpoint temps."""
        for stale in (self.run_dir / "checkpoints").glob(".*.tmp"):
            stale.unlink(missing_ok=True)
        path = self.run_dir / "metrics.jsonl"
        if not path.exists():
            return
        kept = []
        for line in path.read_text().splitlines():
            try:
                if json.loads(line)["step"] <= step:
                    kept.append(line)
            except (ValueError, KeyError, TypeError):
                continue
        tmp = path.with_name(".metrics.jsonl.tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        tmp.replace(path)

    def _open_tensorboard(self):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError("logger=tensorboard needs the tensorboard package: "
                              'pip install "vidgan[tensorboard]"') from None
        return SummaryWriter(log_dir=str(self.run_dir))

    def _fixed_noise(self):
        """The same z and classes for every sample grid of the run: one row per class."""
        tr = self.tr
        columns = tr.t.sample_columns
        rows = max(1, len(tr.class_names))
        gen = torch.Generator().manual_seed(tr.cfg.seed + 12345)
        z = torch.randn(rows * columns, tr.G.z_dim, generator=gen)
        y = torch.arange(rows).repeat_interleave(columns) if tr.class_names else None
        return z, y

    def write(self, record: dict) -> None:
        self.metrics.write(json.dumps(record) + "\n")
        if self.tensorboard:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    self.tensorboard.add_scalar(key, value, record["step"])

    # ----------------------------------------------------------------------------------------------

    def start(self) -> None:
        tr = self.tr
        data = tr.cfg.dataset
        classes = ", ".join(tr.class_names) if tr.class_names else "unconditional"
        log.info("run folder: %s", self.run_dir)
        log.info("G %s: %.2fM params | D %s: %.2fM params", type(tr.G).__name__,
                 count_params(tr.G) / 1e6, type(tr.D).__name__, count_params(tr.D) / 1e6)
        log.info("data %s: %d clips of %dx%dx%d, classes: %s", data._target_.rsplit(".", 1)[-1],
                 len(tr.dataset), data.frames, data.resolution, data.resolution, classes)
        log.info("device %s | precision %s | batch %d x %d process(es) | %d steps from step %d",
                 tr.device, tr.t.precision, tr.t.batch_size, tr.dist.world_size, tr.t.max_steps,
                 tr.step)

    def tick(self, step: int, n_steps: int, d_loss: float, g_loss: float, wait: float) -> None:
        now = time.perf_counter()
        elapsed = max(now - self.last_tick, 1e-9)
        self.last_tick = now
        clips = n_steps * self.tr.t.batch_size * self.tr.dist.world_size
        record = {"step": step, "d_loss": d_loss, "g_loss": g_loss,
                  "clips_per_s": clips / elapsed, "sec_per_step": elapsed / n_steps,
                  "data_wait": wait / elapsed, "lr_G": self.tr.sched_G.get_last_lr()[0],
                  "lr_D": self.tr.sched_D.get_last_lr()[0], "time": now - self.started}
        self.last.update(record)
        self.write(record)
        self.bar.update(step - self.bar.n)
        self.bar.set_postfix(d=f"{d_loss:.3f}", g=f"{g_loss:.3f}", clips_s=f"{clips / elapsed:.1f}")
        if self.bar.disable:
            log.info("step %d/%d  d_loss %.4f  g_loss %.4f  %.1f clips/s  data wait %.1f%%", step,
                     self.tr.t.max_steps, d_loss, g_loss, clips / elapsed, 100 * wait / elapsed)

    @torch.no_grad()
    def samples(self) -> None:
        from vidgan_cli.generate import save_grid
        tr = self.tr
        z, y = self.fixed_noise
        videos = []
        for start in range(0, len(z), 16):
            zb = z[start:start + 16].to(tr.device)
            yb = y[start:start + 16].to(tr.device) if y is not None else None
            videos.append(tr.G_ema(zb, yb).float().cpu())
        stem = self.run_dir / "samples" / f"step_{tr.step:07d}"
        paths = save_grid(torch.cat(videos), stem, nrow=tr.t.sample_columns,
                          labels=tr.class_names or None, fps=tr.t.fps)
        self.last["samples"] = str(paths[0])
        if self.tensorboard:
            from vidgan_cli.video_io import to_uint8
            frames = torch.from_numpy(to_uint8(torch.cat(videos)))  # [N, T, H, W, 3]
            self.tensorboard.add_video("samples", frames.permute(0, 1, 4, 2, 3), tr.step,
                                       fps=tr.t.fps)

    def evaluate(self) -> None:
        from vidgan_cli.metrics import compute_metrics
        tr = self.tr
        results = compute_metrics(tr.G_ema, dataset=tr.dataset, names=list(tr.t.eval_metrics),
                                  num_samples=tr.t.eval_num_samples, batch_size=tr.t.batch_size,
                                  device=tr.device, seed=tr.cfg.seed,
                                  cache_dir=str(self.run_dir / "eval_cache"))
        record = {"step": tr.step, **{f"eval/{k}": v for k, v in results.items()}}
        self.write(record)
        tr.history.append(record)
        self.last.update(record)
        log.info("eval at step %d: %s", tr.step,
                 "  ".join(f"{k} {v:.4g}" for k, v in results.items()))
        key = tr.t.best_metric
        if key:
            if key not in results:
                raise ConfigError(f"trainer.best_metric={key!r} is not among the evaluated metrics "
                                  f"{sorted(results)}")
            value = results[key]
            better = tr.best is None or (value < tr.best if tr.t.best_mode == "min"
                                         else value > tr.best)
            if better:
                tr.best = value
                tr.save("best.ckpt", extra={"best_metric": key})

    def finish(self) -> dict:
        tr = self.tr
        self.bar.close()
        seconds = time.perf_counter() - self.started
        steps = tr.step - self.first_step
        summary = {
            "status": "completed" if tr.step >= tr.t.max_steps else "stopped",
            "step": tr.step, "seconds": seconds,
            "steps_per_s": steps / seconds if seconds else 0.0,
            "final": {k: v for k, v in self.last.items() if k != "time"},
            "best": {"metric": tr.t.best_metric, "value": tr.best} if tr.t.best_metric else None,
            "checkpoints": sorted(str(p) for p in (self.run_dir / "checkpoints").glob("*.ckpt")),
            "run_dir": str(self.run_dir),
        }
        tr.write_json("summary.json", summary)
        log.info("done: %d steps in %.1f s (%.2f steps/s); checkpoints in %s; samples in %s",
                 steps, seconds, summary["steps_per_s"], self.run_dir / "checkpoints",
                 self.run_dir / "samples")
        for line in self.warnings:
            log.warning(line)
        self.metrics.close()
        if self.tensorboard:
            self.tensorboard.close()
        return summary
