"""The GAN training loop: D step(s), G step, EMA, and periodic logs, samples, evals and checkpoints.

One step = ``loss.n_critic`` discriminator updates (each on a fresh real batch) followed by one
generator update, which scores the last D update's fakes (``trainer.reuse_fakes``: G runs forward
once a step, its graph kept through that D update) or fakes of its own.  Losses stay on the device
between log ticks, so the loop does not wait on the host every step; they are checked for NaN/inf at
every tick and before anything is written.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import signal
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn
from torch.nn.utils import parametrize
from torch.utils.data import DataLoader

from vidgan_cli.config import ConfigError, check_model_sizes, to_yaml
from vidgan_cli.data import StepBatchSampler, collate_batched
from vidgan_cli.models.blocks import to_channels_last_3d
from vidgan_cli.train import checkpoint as ckpt_io
from vidgan_cli.train import distributed, heap
from vidgan_cli.train.ema import ema_beta, update_ema

log = logging.getLogger(__name__)

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite."""


class CheckpointWriteError(RuntimeError):
    """The run folder cannot take a checkpoint (full, gone, read-only); the previous one is intact."""


def as_heads(out) -> tuple[torch.Tensor, ...]:
    return tuple(o.float() for o in out) if isinstance(out, (tuple, list)) else (out.float(),)


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> bf16 autocast where the hardware computes bf16 natively (a CUDA GPU that supports
    it; a CPU with AVX-512 bf16 or AMX), else fp32. Other values are returned as they are."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        native = torch.cuda.is_bf16_supported()
    elif device.type == "cpu":
        native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    else:
        native = False
    return "bf16" if native else "fp32"


def lr_lambda(warmup: int, decay: str, total: int):
    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        if decay == "linear":
            return 1.0 - progress
        if decay == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return 1.0
    return factor


class Trainer:
    def __init__(self, cfg: DictConfig, run_dir: Path, resume_from: Path | None = None):
        self.cfg, self.run_dir, self.t = cfg, Path(run_dir), cfg.trainer
        self.dist, self.device = distributed.setup(self.t.device)
        if self.t.retain_heap and self.device.type == "cpu":
            heap.retain_freed_memory()
        if self.t.precision == "auto":  # the run folder's config and checkpoints record the choice
            with open_dict(cfg):
                cfg.trainer.precision = resolve_precision("auto", self.device)
            log.info("trainer.precision=auto: using %s on %s", cfg.trainer.precision, self.device)
        if self.t.precision == "fp16" and self.device.type != "cuda":
            raise ConfigError("trainer.precision=fp16 needs a CUDA device (it relies on a grad "
                              "scaler); on the CPU use bf16 or fp32")
        # One z stream shared by all ranks, from which each takes its slice of the global batch:
        # N processes x B clips see the same latents as one process with N*B.
        self.z_gen = torch.Generator(self.device).manual_seed(cfg.seed)
        self.dataset = instantiate(cfg.dataset)
        self.class_names = list(self.dataset.class_names)
        self._settle_num_classes()

        torch.manual_seed(cfg.seed)  # identical initial weights (and so G_ema) on every rank
        self.G = instantiate(cfg.model.generator).to(self.device)
        self.D = instantiate(cfg.model.discriminator).to(self.device)
        torch.manual_seed(cfg.seed * 1009 + self.dist.rank)  # per-rank: augmentation and the like
        if self.t.channels_last:
            to_channels_last_3d(self.G)
            to_channels_last_3d(self.D)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        self.loss = instantiate(cfg.loss)
        if self.loss.class_weight > 0 and not self.class_names:
            raise ConfigError(f"loss.class_weight={self.loss.class_weight} needs class labels; this "
                              "dataset is unconditional (num_classes 0): set loss.class_weight=0")
        self.augment = instantiate(cfg.augment)
        self.opt_G = instantiate(cfg.optimizer.generator)(params=self.G.parameters())
        self.opt_D = instantiate(cfg.optimizer.discriminator)(params=self.D.parameters())
        schedule = lr_lambda(cfg.optimizer.warmup_steps, cfg.optimizer.decay, self.t.max_steps)
        self.sched_G = torch.optim.lr_scheduler.LambdaLR(self.opt_G, schedule)
        self.sched_D = torch.optim.lr_scheduler.LambdaLR(self.opt_D, schedule)
        use_scaler = self.t.precision == "fp16"
        self.scaler_G = torch.amp.GradScaler("cuda", enabled=use_scaler)
        self.scaler_D = torch.amp.GradScaler("cuda", enabled=use_scaler)

        self.step, self.best = 0, None
        self.history: list[dict] = []  # evaluation results, kept for summary.json
        if resume_from is not None:
            self._resume(resume_from)
        elif cfg.init_from:
            self._init_from(Path(cfg.init_from))

        self.G_train, self.D_train = self.G, self.D
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            if self.device.type == "cuda":  # BN statistics over the global batch (CUDA-only op)
                self.G = nn.SyncBatchNorm.convert_sync_batchnorm(self.G)
            self.G_train = nn.parallel.DistributedDataParallel(self.G, device_ids=ids)
            self.D_train = nn.parallel.DistributedDataParallel(self.D, device_ids=ids)
        # The G step runs D without DDP (D is not updated there, so there is nothing to reduce).
        self.D_fwd = self.D
        self._d_params = [p for p in self.D.parameters() if p.requires_grad]
        if self.t.compile:
            self.G_train, self.D_train = torch.compile(self.G_train), torch.compile(self.D_train)
            self.D_fwd = torch.compile(self.D)

        sampler = StepBatchSampler(len(self.dataset), self.t.batch_size, seed=cfg.seed,
                                   start=self.step * self.loss.n_critic, rank=self.dist.rank,
                                   world_size=self.dist.world_size)
        self.loader = DataLoader(self.dataset, batch_sampler=sampler, collate_fn=collate_batched,
                                 num_workers=self.t.num_workers,
                                 pin_memory=self.device.type == "cuda",
                                 persistent_workers=self.t.num_workers > 0,
                                 # its own generator: creating the iterator must not draw from the
                                 # global RNG, or a resumed run would see different noise
                                 generator=torch.Generator().manual_seed(cfg.seed))
        self.stop_requested = False
        self._window: list[tuple[int, dict[str, torch.Tensor]]] = []  # (step, its scalars)
        self._fake_for_g: torch.Tensor | None = None  # reuse_fakes: the last D update's fakes, with graph
        self._wait = 0.0

    # ----------------------------------------------------------------------------------------------
    # set-up helpers

    def _settle_num_classes(self) -> None:
        found = len(self.class_names)
        if self.cfg.dataset.num_classes is None:
            with open_dict(self.cfg):
                self.cfg.dataset.num_classes = found
            check_model_sizes(self.cfg.model, self.cfg.dataset.frames, self.cfg.dataset.resolution)
        elif self.cfg.dataset.num_classes != found:
            raise ConfigError(f"dataset.num_classes={self.cfg.dataset.num_classes} but the dataset "
                              f"has {found} classes {self.class_names}")

    def _resume(self, path: Path) -> None:
        state = ckpt_io.load_checkpoint(path, map_location=self.device)
        self.G.load_state_dict(state["G"])
        self.G_ema.load_state_dict(state["G_ema"])
        self.D.load_state_dict(state["D"])
        for name in ("opt_G", "opt_D", "sched_G", "sched_D", "scaler_G", "scaler_D"):
            if name in state:
                getattr(self, name).load_state_dict(state[name])
        self.step, self.best = state["step"], state.get("best")
        ckpt_io.set_rng_state(state["rng"])
        self.z_gen.set_state(state["z_rng"].to("cpu"))
        log.info("resumed from %s at step %d", path, self.step)

    def _init_from(self, path: Path) -> None:
        state = ckpt_io.load_checkpoint(path, map_location=self.device)
        for name, module in (("G", self.G), ("G_ema", self.G_ema), ("D", self.D)):
            loaded, skipped = ckpt_io.load_matching(module, state[name])
            log.info("init_from %s: %s loaded %d tensors, skipped %d", path, name, len(loaded),
                     len(skipped))
            for line in skipped:
                log.info("  skipped %s.%s", name, line)

    def _install_signal_handlers(self) -> None:
        def request_stop(signum, _frame):
            log.warning("received %s: finishing this step, then saving a checkpoint",
                        signal.Signals(signum).name)
            self.stop_requested = True
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                signal.signal(sig, request_stop)
            except ValueError:  # not the main thread (e.g. some launchers): keep the default
                pass

    # ----------------------------------------------------------------------------------------------
    # one step

    def _autocast(self):
        if self.t.precision == "fp32":
            return nullcontext()
        return torch.autocast(self.device.type, dtype=AUTOCAST_DTYPES[self.t.precision])

    def _to_video(self, clips: torch.Tensor) -> torch.Tensor:
        # uint8 [B, T, H, W, 3] -> [B, 3, T, H, W] in [-1, 1], in the dtype the step computes in
        # (autocast would cast it at every D call otherwise: a full-size copy each). The permuted
        # view already has channels_last_3d strides; .to keeps them or copies once into the format.
        video = clips.to(self.device, non_blocking=True).permute(0, 4, 1, 2, 3)
        video = video.float().div_(127.5).sub_(1.0)
        fmt = torch.channels_last_3d if self.t.channels_last else torch.contiguous_format
        return video.to(dtype=AUTOCAST_DTYPES.get(self.t.precision, torch.float32), memory_format=fmt)

    def _condition(self, labels: torch.Tensor) -> torch.Tensor | None:
        return labels.to(self.device, non_blocking=True) if self.class_names else None

    def _z(self, n: int) -> torch.Tensor:
        world, rank = self.dist.world_size, self.dist.rank
        z = torch.randn(n * world, self.G.z_dim, device=self.device, generator=self.z_gen)
        return z[rank * n:(rank + 1) * n]

    def _judge(self, D, video: torch.Tensor, y: torch.Tensor | None):
        """D's logits and, when the auxiliary class loss is on, its class scores (else None)."""
        if self.loss.class_weight > 0:
            return D(video, y, class_scores=True)
        return D(video, y), None

    def d_step(self, real: torch.Tensor, y: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """One D update. Returns its scalars, detached (no host sync): ``d_loss`` (the adversarial
        term), ``d_class`` (the auxiliary class loss on reals, when on) and ``penalty`` (the
        regularizers' weighted sum, on the steps that compute it, before the x reg_every)."""
        # reuse_fakes: the G step that follows the last critic update scores these same fakes, so G's
        # forward keeps its graph (one G forward per step instead of two)
        keep = self.t.reuse_fakes and (self._d_updates + 1) % self.loss.n_critic == 0
        with torch.set_grad_enabled(keep), self._autocast():
            fake = self.G_train(self._z(real.shape[0]), y)
        if keep:
            self._fake_for_g, fake = fake, fake.detach()
        every = self.loss.reg_every
        penalize = self.loss.regularized and self._d_updates % every == 0
        # R1/R2 differentiate the outputs of the forward below (no D forward and backward of their
        # own), except through a compiled D, which has no double backward: they run the plain D then.
        reuse = penalize and not self.t.compile
        real, fake = self.augment(real), self.augment(fake)
        if reuse:
            real, fake = self.loss.penalty_inputs(real, fake)
        # cached(): a spectrally normalised weight is computed (one power iteration) once per
        # update, not once per D call.
        with parametrize.cached():
            with self._autocast():
                real_out, real_scores = self._judge(self.D_train, real, y)
                fake_out = self.D_train(fake, y)
            loss = self.loss.d_loss(as_heads(real_out), as_heads(fake_out))
            stats = {"d_loss": loss}
            total = loss
            if real_scores is not None:
                stats["d_class"] = self.loss.class_loss(real_scores, y)
                total = total + stats["d_class"]
            if penalize:
                with self._autocast():
                    outs = (real_out, fake_out) if reuse else (None, None)
                    stats["penalty"] = self.loss.penalty(self.D, real, fake, y, *outs)
                total = total + stats["penalty"] * every
        self._d_updates += 1
        self.opt_D.zero_grad(set_to_none=True)
        # Only D's weights: with R1/R2 the clips are leaves that require grad, and a plain backward
        # would also run every path back to them (their gradient is not used).
        self.scaler_D.scale(total).backward(inputs=self._d_params if reuse else None)
        self._optimizer_step(self.opt_D, self.scaler_D, loss)
        return {k: v.detach() for k, v in stats.items()}

    def g_step(self, real: torch.Tensor, y: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """One G update (on the fakes the D step kept, with ``reuse_fakes``). Returns ``g_loss`` and,
        when on, ``g_class`` (the class loss on fakes), detached."""
        self.D.requires_grad_(False)  # no weight gradients for D in the G step
        fake, self._fake_for_g = self._fake_for_g, None
        try:
            with parametrize.cached(), self._autocast():
                if fake is None:
                    fake = self.G_train(self._z(real.shape[0]), y)
                fake_out, fake_scores = self._judge(self.D_fwd, self.augment(fake), y)
                real_out = None
                if self.loss.needs_real_for_g:
                    with torch.no_grad():
                        real_out = as_heads(self.D_fwd(self.augment(real), y))
            loss = self.loss.g_loss(as_heads(fake_out), real_out)
            stats = {"g_loss": loss}
            total = loss
            if fake_scores is not None:
                stats["g_class"] = self.loss.class_loss(fake_scores, y)
                total = total + stats["g_class"]
            self.opt_G.zero_grad(set_to_none=True)
            self.scaler_G.scale(total).backward()
            self._optimizer_step(self.opt_G, self.scaler_G, loss)
        finally:
            self.D.requires_grad_(True)
        return {k: v.detach() for k, v in stats.items()}

    def _optimizer_step(self, opt, scaler, loss: torch.Tensor) -> None:
        if self.t.nan_policy == "skip" and not self._finite(opt, loss):
            log.warning("step %d: non-finite loss or gradient, update skipped", self.step + 1)
            opt.zero_grad(set_to_none=True)
            return
        scaler.step(opt)
        scaler.update()

    @staticmethod
    def _finite(opt, loss: torch.Tensor) -> bool:
        """Loss and every gradient finite (one host sync; only with nan_policy=skip). A NaN can reach
        the gradients with a finite loss, e.g. from a bf16 convolution backward."""
        grads = [p.grad for group in opt.param_groups for p in group["params"] if p.grad is not None]
        norms = torch.stack(torch._foreach_norm(grads)) if grads else loss.new_zeros(1)
        return bool(torch.isfinite(loss) & torch.isfinite(norms).all())

    # ----------------------------------------------------------------------------------------------
    # the loop

    def fit(self) -> dict:
        from vidgan_cli.train.reporting import RunLogger  # keeps loop and I/O apart
        self.reporter = RunLogger(self) if self.dist.is_main else None
        self._install_signal_handlers()
        self._d_updates = self.step * self.loss.n_critic
        batches = iter(self.loader)
        clips_per_step = self.t.batch_size * self.dist.world_size
        if self.reporter:
            self.reporter.start()
        while self.step < self.t.max_steps:
            stats: dict[str, torch.Tensor] = {}  # in the order computed (drain_window relies on it)
            for _ in range(self.loss.n_critic):
                waited = time.perf_counter()
                clips, labels = next(batches)
                self._wait += time.perf_counter() - waited
                real, y = self._to_video(clips), self._condition(labels)
                stats.update(self.d_step(real, y))  # the last critic step's, a penalty from any
            stats.update(self.g_step(real, y))
            self.sched_G.step()
            self.sched_D.step()
            self.step += 1
            beta = ema_beta(clips_per_step, self.step * clips_per_step,
                            self.t.ema_half_life_clips, self.t.ema_rampup)
            update_ema(self.G_ema, self.G, beta)
            self._window.append((self.step, stats))
            stop = self.stop_requested
            if self.dist.enabled:  # agree at log ticks only: it costs a host sync
                tick = self.step % self.t.log_every == 0
                stop = tick and distributed.all_ranks_agree(stop, self.device)
            self._periodic(last=self.step == self.t.max_steps or stop)
            if stop:
                log.warning("stopped at step %d on request; resume with resume=auto", self.step)
                break
        summary = self.reporter.finish() if self.reporter else {}
        distributed.teardown()
        return summary

    def _due(self, every: int, last: bool) -> bool:
        return last or (every > 0 and self.step % every == 0)

    def _periodic(self, last: bool) -> None:
        t = self.t
        if self._due(t.log_every, last):
            self.drain_window()
        if not self.dist.is_main:
            return
        if self._due(t.sample_every, last):
            self.drain_window()
            self.reporter.samples()
        if t.eval_every and self._due(t.eval_every, last):
            self.drain_window()
            self.reporter.evaluate()
        if self._due(t.save_every, last):
            self.drain_window()
            self.save("last.ckpt")
        if t.snapshot_every and self.step % t.snapshot_every == 0:
            self.save(f"step_{self.step:07d}.ckpt")

    def drain_window(self) -> None:
        """Bring the scalars since the last tick to the host (one sync), check them, log their mean."""
        if not self._window:
            return
        window, self._window = self._window, []
        steps = [s for s, _ in window]
        names = sorted({k for _, v in window for k in v})  # the same order on every rank
        # one column per scalar, over the steps that have it (the penalty: every reg_every-th)
        at = {k: [i for i, (_, v) in enumerate(window) if k in v] for k in names}
        flat = torch.cat([torch.stack([window[i][1][k] for i in at[k]]).float() for k in names])
        if self.dist.enabled:  # mean over ranks, so every rank sees (and stops on) the same values
            torch.distributed.all_reduce(flat)
            flat /= self.dist.world_size
        columns = dict(zip(names, flat.cpu().split([len(at[k]) for k in names]), strict=True))
        if self.t.nan_policy == "stop":
            first_bad = []  # per scalar: (window row, its place in that step's computation, name, value)
            for name, values in columns.items():
                bad = (~torch.isfinite(values)).nonzero().flatten()
                if len(bad):
                    row = at[name][int(bad[0])]
                    first_bad.append((row, list(window[row][1]).index(name), name, values[bad[0]].item()))
            if first_bad:  # the earliest: what follows may just be its consequence
                row, _, name, value = min(first_bad)
                raise TrainingDiverged(
                    f"{name} became {value} at step {steps[row]}; the last checkpoint on disk is from "
                    "before it. Lower the learning rate, add a regularizer (loss.r1_gamma) or try "
                    "trainer.nan_policy=skip")
        wait, self._wait = self._wait, 0.0
        if self.reporter:
            means = {k: v.nan_to_num(nan=0.0, posinf=0.0, neginf=0.0).mean().item()
                     for k, v in columns.items()}
            self.reporter.tick(steps[-1], len(steps), means, wait)

    def save(self, name: str, extra: dict | None = None) -> Path:
        path = self.run_dir / "checkpoints" / name
        state = ckpt_io.make_checkpoint(
            G=self.G, G_ema=self.G_ema, D=self.D, opt_G=self.opt_G, opt_D=self.opt_D,
            sched_G=self.sched_G, sched_D=self.sched_D, step=self.step,
            config_yaml=to_yaml(self.cfg), class_names=self.class_names,
            extra={"scaler_G": self.scaler_G.state_dict(), "scaler_D": self.scaler_D.state_dict(),
                   "z_rng": self.z_gen.get_state(), "best": self.best, **(extra or {})})
        try:
            return ckpt_io.atomic_save(state, path)
        except OSError as err:
            raise CheckpointWriteError(
                f"could not write {path} at step {self.step}: {err.strerror or err}. Any earlier "
                f"{name} there is intact; free space or fix the folder, then continue with "
                "resume=auto") from err

    def config_dict(self) -> dict:
        return OmegaConf.to_container(self.cfg, resolve=True)

    def write_json(self, name: str, payload: dict) -> None:
        tmp = self.run_dir / f".{name}.tmp"
        tmp.write_text(json.dumps(payload, indent=2))
        tmp.replace(self.run_dir / name)
