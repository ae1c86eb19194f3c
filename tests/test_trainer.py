"""The loop in-process on tiny configs: exact resume, checkpoints, divergence, precision, transfer."""

import json

import pytest
import torch
import yaml

from vidgan_cli.config import ConfigError
from vidgan_cli.losses import GANLoss
from vidgan_cli.models.blocks import to_channels_last_3d
from vidgan_cli.train.checkpoint import build_generator, load_checkpoint
from vidgan_cli.train.trainer import Trainer, TrainingDiverged, resolve_precision


def params(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


def assert_same(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_two_n_steps_equal_n_plus_resume_n(compose_train, tmp_path):
    full = Trainer(compose_train("trainer.max_steps=4"), tmp_path / "full")
    full.fit()
    half = Trainer(compose_train("trainer.max_steps=2", "trainer.save_every=2"), tmp_path / "half")
    half.fit()
    resumed = Trainer(compose_train("trainer.max_steps=4"), tmp_path / "half",
                      resume_from=tmp_path / "half" / "checkpoints" / "last.ckpt")
    assert resumed.step == 2
    resumed.fit()
    for name in ("G", "D", "G_ema"):
        assert_same(params(getattr(full, name)), params(getattr(resumed, name)))
    lines = [json.loads(x) for x in (tmp_path / "half" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if "d_loss" in x] == [1, 2, 3, 4]


def test_checkpoint_is_weights_only_and_rebuilds_the_generator(compose_train, tmp_path):
    trainer = Trainer(compose_train("trainer.max_steps=2", "trainer.save_every=2"), tmp_path)
    trainer.fit()
    path = tmp_path / "checkpoints" / "last.ckpt"
    raw = torch.load(path, weights_only=True)
    assert raw["step"] == 2 and raw["class_names"] == ["circle", "square"]
    assert raw["version"] and raw["G_class"] == "vidgan_cli.models.cgan3d.Generator"
    assert yaml.safe_load(raw["config_yaml"])["trainer"]["max_steps"] == 2
    G = build_generator(load_checkpoint(path))
    if trainer.t.channels_last:  # the same memory format: the same kernels, bit for bit
        to_channels_last_3d(G)
    z, y = torch.randn(2, G.z_dim), torch.tensor([0, 1])
    assert torch.equal(G(z, y), trainer.G_ema(z, y))
    assert list(tmp_path.glob("checkpoints/.*")) == [], "no temp files left behind"


def test_samples_and_summary_are_written(compose_train, tmp_path):
    Trainer(compose_train("trainer.max_steps=2", "trainer.sample_every=2"), tmp_path).fit()
    for suffix in (".mp4", ".gif", ".png"):
        assert (tmp_path / "samples" / f"step_0000002{suffix}").stat().st_size > 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["step"] == 2
    assert summary["final"]["d_loss"] == pytest.approx(summary["final"]["d_loss"])  # finite


def test_divergence_stops_naming_step_and_keeps_last_good_checkpoint(compose_train, tmp_path):
    trainer = Trainer(compose_train("trainer.max_steps=4", "trainer.save_every=1",
                                    "trainer.log_every=2"), tmp_path)
    real_d_loss = trainer.loss.d_loss
    calls = {"n": 0}

    def d_loss(real_out, fake_out):
        calls["n"] += 1
        value = real_d_loss(real_out, fake_out)
        return value * float("nan") if calls["n"] == 2 else value
    trainer.loss.d_loss = d_loss
    with pytest.raises(TrainingDiverged, match=r"d_loss became nan at step 2"):
        trainer.fit()
    assert load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")["step"] == 1


def test_divergence_of_the_penalty_names_the_step_it_was_computed_on(compose_train, tmp_path):
    # R1/R2 on steps 1, 3, 5 (every 2nd D step); the second one fails, logged at the tick of step 4
    trainer = Trainer(compose_train("loss=rpgan", "loss.reg_every=2", "trainer.max_steps=6",
                                    "trainer.log_every=4"), tmp_path)
    real_penalty, calls = trainer.loss.penalty, {"n": 0}

    def penalty(*args):
        calls["n"] += 1
        value = real_penalty(*args)
        return value * float("nan") if calls["n"] == 2 else value
    trainer.loss.penalty = penalty
    with pytest.raises(TrainingDiverged, match=r"penalty became nan at step 3"):
        trainer.fit()


def test_nan_policy_skip_leaves_parameters_unchanged(compose_train, tmp_path):
    trainer = Trainer(compose_train("trainer.max_steps=1", "trainer.nan_policy=skip"), tmp_path)
    before = {k: v.clone() for k, v in trainer.D.named_parameters()}
    trainer.loss.d_loss = lambda r, f: sum(x.sum() for x in r) * float("nan")
    trainer.fit()
    assert_same(before, dict(trainer.D.named_parameters()))


def test_bf16_autocast_on_cpu_trains(compose_train, tmp_path):
    trainer = Trainer(compose_train("trainer.precision=bf16", "trainer.channels_last=true"), tmp_path)
    before = params(trainer.G)
    summary = trainer.fit()
    assert torch.isfinite(torch.tensor(summary["final"]["g_loss"]))
    assert any(not torch.equal(before[k], v) for k, v in params(trainer.G).items())


@pytest.mark.parametrize("precision, autocast", [("bf16", True), ("fp32", False)])
def test_regularizers_run_in_the_step_precision(compose_train, tmp_path, precision, autocast):
    trainer = Trainer(compose_train(f"trainer.precision={precision}", "loss=rpgan",
                                    "trainer.max_steps=1"), tmp_path)
    seen, penalty = [], trainer.loss.penalty
    def spy(*args):
        seen.append(torch.is_autocast_enabled("cpu"))
        return penalty(*args)
    trainer.loss.penalty = spy
    trainer.fit()
    assert seen == [autocast]


def test_spectral_norm_runs_once_per_update_not_once_per_d_call(compose_train, tmp_path):
    """D judges reals and fakes (and, with R1/R2, both again) in one update: the normalised weights
    are computed once for it, and once for the G step."""
    trainer = Trainer(compose_train("loss=rpgan", "loss.reg_every=1"), tmp_path)
    trainer._d_updates = 0
    norm = trainer.D.blocks[0].conv1.parametrizations.weight[0]
    calls, forward = [], norm.forward
    norm.forward = lambda weight: calls.append(1) or forward(weight)
    clips, labels = next(iter(trainer.loader))
    real, y = trainer._to_video(clips), trainer._condition(labels)
    trainer.d_step(real, y)
    assert len(calls) == 1
    trainer.g_step(real, y)
    assert len(calls) == 2
    trainer.D(real, y)  # outside a step the weight is recomputed on every call, as before
    assert len(calls) == 3


def test_real_clips_arrive_in_the_step_precision_and_memory_format(compose_train, tmp_path):
    trainer = Trainer(compose_train("trainer.precision=bf16", "trainer.channels_last=true"), tmp_path)
    clips = torch.tensor([0, 255], dtype=torch.uint8).repeat_interleave(8 * 16 * 16 * 3 // 2).view(
        1, 8, 16, 16, 3)
    real = trainer._to_video(clips)
    assert real.dtype == torch.bfloat16 and real.shape == (1, 3, 8, 16, 16)
    assert real.is_contiguous(memory_format=torch.channels_last_3d)
    assert real.min().item() == -1.0 and real.max().item() == 1.0
    trainer = Trainer(compose_train("trainer.precision=fp32", "trainer.channels_last=false"), tmp_path / "b")
    real = trainer._to_video(clips)
    assert real.dtype == torch.float32 and real.is_contiguous()


@pytest.mark.parametrize("model", ["model=cgan3d", "model=mocogan", "model/discriminator=dual"])
def test_auxiliary_class_loss_trains_d_to_classify_and_changes_the_update(compose_train, tmp_path,
                                                                             model):
    def trained_embedding(weight: float, run: str):
        trainer = Trainer(compose_train(model, f"loss.class_weight={weight}", "trainer.max_steps=1"),
                          tmp_path / run)
        summary = trainer.fit()
        assert torch.isfinite(torch.tensor([summary["final"]["d_loss"], summary["final"]["g_loss"]])).all()
        return {k: v.detach().clone() for k, v in trainer.D.named_parameters() if "embed" in k}
    with_class, without = trained_embedding(1.0, "a"), trained_embedding(0.0, "b")
    assert with_class.keys() == without.keys() and with_class
    assert any(not torch.allclose(with_class[k], without[k]) for k in with_class)


def test_auxiliary_class_loss_needs_labels(compose_train, tmp_path):
    with pytest.raises(ConfigError, match="loss.class_weight=1.0 needs class labels"):
        Trainer(compose_train("dataset.num_classes=0", "loss.class_weight=1"), tmp_path)


@pytest.mark.parametrize("native, expected", [(True, "bf16"), (False, "fp32")])
def test_auto_precision_is_bf16_only_on_hardware_with_native_bf16(compose_train, tmp_path, monkeypatch,
                                                                 native, expected):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert resolve_precision("auto", torch.device("cpu")) == expected
    assert resolve_precision("fp32", torch.device("cpu")) == "fp32"
    trainer = Trainer(compose_train("trainer.precision=auto", "trainer.max_steps=1",
                                    "trainer.save_every=1"), tmp_path)
    assert trainer.t.precision == expected
    trainer.fit()
    saved = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert f"precision: {expected}" in saved["config_yaml"]


def test_fp16_on_cpu_is_refused(compose_train, tmp_path):
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        Trainer(compose_train("trainer.precision=fp16"), tmp_path)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_compiled_training_saves_plain_state_dict(compose_train, tmp_path, precision):
    # bf16 + channels-last is the CPU default: R1/R2 step, clips handed to D in bf16, G step
    trainer = Trainer(compose_train("trainer.compile=true", "trainer.max_steps=1", "trainer.save_every=1",
                                    f"trainer.precision={precision}", "trainer.channels_last=true"),
                      tmp_path)
    trainer.fit()
    assert trainer.step == 1
    state = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert not any("_orig_mod" in k for k in state["G"]) and not any("module." in k for k in state["D"])


def test_init_from_loads_matching_tensors_and_reports_the_rest(compose_train, tmp_path, caplog):
    Trainer(compose_train("trainer.max_steps=1", "trainer.save_every=1"), tmp_path / "src").fit()
    source = load_checkpoint(tmp_path / "src" / "checkpoints" / "last.ckpt")
    caplog.set_level("INFO")
    target = Trainer(compose_train("dataset.num_classes=3",
                                   f"init_from={tmp_path}/src/checkpoints/last.ckpt"), tmp_path / "dst")
    state = target.G.state_dict()
    same = [k for k in source["G"] if k in state and state[k].shape == source["G"][k].shape]
    assert same and all(torch.equal(state[k], source["G"][k]) for k in same)
    assert "skipped" in caplog.text and "shape" in caplog.text


def test_eval_during_training_keeps_best_checkpoint_and_returns_metric(compose_train, tmp_path):
    trainer = Trainer(compose_train("dataset.frames=16", "trainer.max_steps=2", "trainer.eval_every=1",
                                    "trainer.eval_num_samples=8", "trainer.best_metric=shapes/fd",
                                    "trainer.best_mode=min"), tmp_path)
    summary = trainer.fit()
    evals = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()
             if "eval/shapes/fd" in x]
    assert [e["step"] for e in evals] == [1, 2]
    best = min(e["eval/shapes/fd"] for e in evals)
    assert summary["best"] == {"metric": "shapes/fd", "value": best}
    saved = load_checkpoint(tmp_path / "checkpoints" / "best.ckpt")
    assert saved["best"] == best and saved["step"] == [e["step"] for e in evals
                                                      if e["eval/shapes/fd"] == best][0]


def test_nan_policy_skip_catches_a_nan_gradient_behind_a_finite_loss(compose_train, tmp_path):
    trainer = Trainer(compose_train("trainer.max_steps=1", "trainer.nan_policy=skip"), tmp_path)
    before = {k: v.clone() for k, v in trainer.D.named_parameters()}
    first = next(trainer.D.parameters())
    first.register_hook(lambda grad: grad * float("nan"))
    summary = trainer.fit()
    assert torch.isfinite(torch.tensor(summary["final"]["d_loss"]))
    assert_same(before, dict(trainer.D.named_parameters()))


@pytest.mark.parametrize("model", ["cgan3d", "mocogan", "tgan"])
def test_every_model_trains_with_channels_last_and_the_dual_discriminator(model, compose_train, tmp_path):
    trainer = Trainer(compose_train(f"model={model}", "model/discriminator=dual",
                                    "trainer.channels_last=true", "trainer.max_steps=1"), tmp_path)
    summary = trainer.fit()
    assert torch.isfinite(torch.tensor([summary["final"]["d_loss"], summary["final"]["g_loss"]])).all()


def test_d_step_penalty_on_the_loss_forward_equals_a_separate_forward(compose_train, tmp_path):
    """On an R1/R2 step the D step differentiates its own outputs; the D gradients are the same
    as with the penalty's own D forward (the path a compiled D takes)."""
    grads = []
    for reuse in (True, False):
        trainer = Trainer(compose_train("loss=rpgan", "loss.r1_gamma=10", "loss.r2_gamma=10"),
                          tmp_path / str(reuse))
        if not reuse:
            def own_forward(D, real, fake, y, *outs, loss=trainer.loss):
                return GANLoss.penalty(loss, D, real, fake, y)
            trainer.loss.penalty = own_forward
            trainer.loss.penalty_inputs = lambda real, fake: (real, fake)
        clips, labels = next(iter(trainer.loader))
        trainer._d_updates = 0  # a penalised step
        trainer.d_step(trainer._to_video(clips), trainer._condition(labels))
        grads.append({k: p.grad.clone() for k, p in trainer.D.named_parameters()})
    assert grads[0].keys() == grads[1].keys()
    for key in grads[0]:
        torch.testing.assert_close(grads[0][key], grads[1][key], rtol=1e-4, atol=1e-6, msg=key)


@pytest.mark.parametrize("n_critic", [1, 2])
def test_reuse_fakes_runs_g_once_per_step_with_the_same_update(compose_train, tmp_path, n_critic):
    """trainer.reuse_fakes: the G step scores the last D update's fakes instead of new ones. Given the
    same latents, G's update is the one a second forward would have made, with one G forward fewer
    per step; nothing of it outlives the step."""
    latents = torch.randn(64, 256, generator=torch.Generator().manual_seed(1))
    trainers = {}
    for reuse in (False, True):
        trainer = Trainer(compose_train(f"trainer.reuse_fakes={reuse}", "trainer.max_steps=2",
                                        f"loss.n_critic={n_critic}", "loss=rpgan"), tmp_path / str(reuse))
        z_dim = trainer.G.z_dim
        # every G forward of a step sees the step's latents (the second forward of a non-reusing step
        # gets what the reusing one's G step reuses)
        trainer._z = lambda n, t=trainer, d=z_dim: latents[:n, :d] + t.step
        calls = []
        trainer.G.register_forward_hook(lambda *_, calls=calls: calls.append(torch.is_grad_enabled()))
        trainer.fit()
        assert trainer._fake_for_g is None
        trainers[reuse] = trainer, calls
    (plain, plain_calls), (reused, reused_calls) = trainers[False], trainers[True]
    assert plain_calls == ([False] * n_critic + [True]) * 2
    assert reused_calls == ([False] * (n_critic - 1) + [True]) * 2
    for name, value in plain.G.named_parameters():
        torch.testing.assert_close(dict(reused.G.named_parameters())[name], value, msg=name)
    for name, value in plain.D.state_dict().items():
        torch.testing.assert_close(reused.D.state_dict()[name], value, msg=name)
