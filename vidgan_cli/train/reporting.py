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
from vidgan_cli.console import WarningCollector, config_tree, key_value_table, render_text

log = logging.getLogger("vidgan_cli.train")
LOSS_ORDER = ("d_loss", "g_loss", "d_class", "g_class", "penalty")  # as logged


def _loss_rank(name: str) -> tuple[int, str]:
    return (LOSS_ORDER.index(name) if name in LOSS_ORDER else len(LOSS_ORDER), name)


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
        self.warnings = WarningCollector().__enter__()
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
        header = key_value_table("vidgan train", [
            ("generator", f"{type(tr.G).__name__} ({type(tr.G).__module__.rsplit('.', 1)[-1]}), "
                          f"{count_params(tr.G) / 1e6:.2f}M parameters"),
            ("discriminator", f"{type(tr.D).__name__} ({type(tr.D).__module__.rsplit('.', 1)[-1]}), "
                              f"{count_params(tr.D) / 1e6:.2f}M parameters"),
            ("loss", f"{tr.cfg.loss.get('kind', tr.cfg.loss._target_)}"),
            ("data", f"{data._target_.rsplit('.', 1)[-1]}: {len(tr.dataset)} clips of "
                     f"{data.frames}x{data.resolution}x{data.resolution}"),
            ("classes", classes),
            ("device", f"{tr.device}, {tr.t.precision}"
                       f"{', channels_last_3d' if tr.t.channels_last else ''}"
                       f"{', compiled' if tr.t.compile else ''}"),
            ("batch", f"{tr.t.batch_size} x {tr.dist.world_size} process(es)"),
            ("steps", f"{tr.step} -> {tr.t.max_steps}"),
            ("run folder", str(self.run_dir)),
        ])
        log.info("\n%s", render_text(header))
        tree = render_text(config_tree(tr.cfg))
        (self.run_dir / "config_tree.txt").write_text(tree + "\n")
        log.debug("\n%s", tree)

    def tick(self, step: int, n_steps: int, losses: dict[str, float], wait: float) -> None:
        """``losses``: the means since the last tick of ``d_loss``, ``g_loss`` and, when the run
        has them, ``d_class``, ``g_class`` and ``penalty``."""
        now = time.perf_counter()
        elapsed = max(now - self.last_tick, 1e-9)
        self.last_tick = now
        clips = n_steps * self.tr.t.batch_size * self.tr.dist.world_size
        losses = {k: losses[k] for k in sorted(losses, key=_loss_rank)}
        d_loss, g_loss = losses["d_loss"], losses["g_loss"]
        record = {"step": step, **losses,
                  "clips_per_s": clips / elapsed, "sec_per_step": elapsed / n_steps,
                  "data_wait": wait / elapsed, "lr_G": self.tr.sched_G.get_last_lr()[0],
                  "lr_D": self.tr.sched_D.get_last_lr()[0], "time": now - self.started}
        self.last.update(record)
        self.write(record)
        self.bar.update(step - self.bar.n)
        postfix = {"d": f"{d_loss:.3f}", "g": f"{g_loss:.3f}", "clips/s": f"{clips / elapsed:.1f}"}
        if self.tr.t.best_metric and self.tr.best is not None:
            postfix[self.tr.t.best_metric] = f"{self.last.get('eval/' + self.tr.t.best_metric):.4g}"
        self.bar.set_postfix(postfix)
        if self.bar.disable:
            values = "  ".join(f"{k} {v:.4f}" for k, v in losses.items())
            log.info("step %d/%d  %s  %.1f clips/s  data wait %.1f%%", step, self.tr.t.max_steps,
                     values, clips / elapsed, 100 * wait / elapsed)

    @torch.no_grad()
    def samples(self) -> None:
        from vidgan_cli.generate import save_grid
        tr = self.tr
        z, y = self.fixed_noise
        videos = []
        # Generators that draw noise of their own (mocogan's motion) draw it from a fixed seed here,
        # so every grid shows the same clips, and the training RNG stream does not see the sampling.
        devices = [tr.device] if tr.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(tr.cfg.seed + 54321)
            for start in range(0, len(z), 16):
                zb = z[start:start + 16].to(tr.device)
                yb = y[start:start + 16].to(tr.device) if y is not None else None
                videos.append(tr.G_ema(zb, yb).float().cpu())
        stem = self.run_dir / "samples" / f"step_{tr.step:07d}"
        paths = save_grid(torch.cat(videos), stem, nrow=tr.t.sample_columns,
                          labels=tr.class_names or None, fps=tr.t.fps)
        self.last["samples"] = str(paths[0])
        if self.tensorboard:
            self._tensorboard_video("samples", paths[1], tr.step)

    def _tensorboard_video(self, tag: str, gif_path, step: int) -> None:
        """The sample grid as an animated image in TensorBoard's Images tab.

        ``SummaryWriter.add_video`` needs moviepy to make the GIF; we already wrote one.
        """
        import imageio.v3 as iio
        from tensorboard.compat.proto.summary_pb2 import Summary
        height, width = iio.improps(gif_path, index=0).shape[:2]
        image = Summary.Image(height=height, width=width, colorspace=3,
                              encoded_image_string=gif_path.read_bytes())
        summary = Summary(value=[Summary.Value(tag=tag, image=image)])
        self.tensorboard._get_file_writer().add_summary(summary, step)

    def evaluate(self) -> None:
        from vidgan_cli.metrics import compute_metrics
        tr = self.tr
        results = compute_metrics(tr.G_ema, dataset=tr.dataset, names=list(tr.t.eval_metrics),
                                  num_samples=tr.t.eval_num_samples, batch_size=tr.t.batch_size,
                                  device=tr.device, seed=tr.cfg.seed,
                                  i3d_path=tr.t.eval_i3d_path,
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
        rows = [("status", summary["status"]), ("steps", f"{steps} (now at {tr.step})"),
                ("time", f"{seconds:.1f} s"),
                ("throughput", f"{summary['steps_per_s']:.3f} steps/s, "
                               f"{summary['steps_per_s'] * tr.t.batch_size * tr.dist.world_size:.1f} clips/s")]
        rows += [(k, v) for k, v in self.last.items() if k in LOSS_ORDER or k.startswith("eval/")]
        if summary["best"]:
            rows.append((f"best {tr.t.best_metric}", tr.best))
        rows += [("checkpoints", str(self.run_dir / "checkpoints")),
                 ("samples", str(self.last.get("samples", "none")))]
        log.info("\n%s", render_text(key_value_table("run summary", rows)))
        self.warnings.__exit__()
        if self.warnings.messages:
            log.info("%d warning(s) during the run:\n  %s", len(self.warnings.messages),
                     "\n  ".join(self.warnings.messages))
        self.metrics.close()
        if self.tensorboard:
            self._tensorboard_hparams(summary)
            self.tensorboard.close()
        return summary

    def _tensorboard_hparams(self, summary: dict) -> None:
        """Hyperparameters of a sweep job (its overrides) with its final metrics, for the HParams tab."""
        from hydra.core.hydra_config import HydraConfig
        if not HydraConfig.initialized():
            return
        overrides = dict(o.split("=", 1) for o in HydraConfig.get().overrides.task if "=" in o)
        metrics = {f"hparam/{k}": v for k, v in summary["final"].items()
                   if isinstance(v, (int, float)) and k != "step"}
        if overrides and metrics:
            self.tensorboard.add_hparams(overrides, metrics, run_name=".")
