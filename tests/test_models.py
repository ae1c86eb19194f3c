"""Generators and discriminators of every model: shapes, ranges, conditioning, sampling, size checks,
config round trips, and two real training steps for every model x loss x conditioning."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate

from vidgan_cli.config import validate_train
from vidgan_cli.losses import KINDS, GANLoss
from vidgan_cli.models import blocks, cgan3d, dual, mocogan, tgan
from vidgan_cli.models.blocks import ConditionalBatchNorm, to_channels_last_3d

Z = 16
SIZES = dict(frames=4, resolution=16, base_channels=4, max_channels=16)
G_EXTRA = {"cgan3d": {}, "mocogan": dict(motion_dim=4, noise_dim=4),
           "tgan": dict(frame_latent_dim=8, temporal_channels=16)}
GENERATORS = {"cgan3d": cgan3d.Generator, "mocogan": mocogan.Generator, "tgan": tgan.Generator}
DISCRIMINATORS = {"cgan3d": cgan3d.Discriminator, "mocogan": mocogan.Discriminator,
                  "tgan": tgan.Discriminator, "dual": dual.DualDiscriminator}
# The D each generator trains with by default, plus the dual D swapped in (model/discriminator=dual).
PAIRS = [("cgan3d", "cgan3d"), ("mocogan", "mocogan"), ("tgan", "tgan"), ("cgan3d", "dual"),
         ("tgan", "dual")]


def make_g(name: str, num_classes: int = 0, **kw):
    torch.manual_seed(0)
    return GENERATORS[name](z_dim=Z, num_classes=num_classes, **{**SIZES, **G_EXTRA[name], **kw})


def make_d(name: str, num_classes: int = 0, **kw):
    torch.manual_seed(0)
    return DISCRIMINATORS[name](num_classes=num_classes, **{**SIZES, **kw})


def heads(out) -> tuple[torch.Tensor, ...]:
    return out if isinstance(out, tuple) else (out,)


def labels(n: int, num_classes: int):
    return torch.arange(n) % num_classes if num_classes else None


# --------------------------------------------------------------------------------------------------
# generators


@pytest.mark.parametrize("block", ["plain", "residual"])
@pytest.mark.parametrize("num_classes", [0, 3])
@pytest.mark.parametrize("name", list(GENERATORS))
def test_generator_shape_and_range(name, num_classes, block):
    G = make_g(name, num_classes, block=block, resolution=32, frames=8)
    video = G(torch.randn(3, Z) * 3, labels(3, num_classes))
    assert video.shape == (3, 3, 8, 32, 32)
    assert video.abs().max() <= 1.0 and video.std() > 0


def test_cgan3d_output_tanh_is_fused_into_its_rgb_layer():
    """The plain cgan3d generator's last op is its RGB layer with the tanh inside (conv.py, in
    channels_last_3d): the same clip as tanh of that layer's own output, and no tanh op anywhere in
    the forward."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Ops(TorchDispatchMode):
        names: list[str] = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.names.append(func.__name__.split(".")[0])
            return func(*args, **(kwargs or {}))

    G = to_channels_last_3d(make_g("cgan3d", 3, base_channels=8))  # fused: channels-last maps only
    z, y = torch.randn(2, Z) * 3, labels(2, 3)
    rgb_in = []
    G.body.to_rgb.conv1.register_forward_hook(lambda m, args, out: rgb_in.append(args[0]))
    with Ops() as ops:
        video = G(z, y)
    assert "tanh" not in ops.names and "_convolution_transpose_pointwise" in ops.names
    torch.testing.assert_close(video, torch.tanh(torch.nn.ConvTranspose3d.forward(G.body.to_rgb.conv1, rgb_in[0])))
    with pytest.raises(ValueError, match="block must be plain"):
        blocks.UpBlock(8, 3, 0, block="residual", tanh=True)


def spread_class_embeddings(module: torch.nn.Module) -> None:
    """CBN starts with gain 1 and bias 0 for every class (classes look alike until trained)."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, ConditionalBatchNorm):
                m.gain.weight.normal_(1.0, 0.5)
                m.bias.weight.normal_(0.0, 0.5)


@pytest.mark.parametrize("name", list(GENERATORS))
def test_generator_condition_changes_the_clip(name):
    G = make_g(name, num_classes=3).eval()
    spread_class_embeddings(G)
    z = torch.randn(1, Z).expand(3, -1)
    gen = torch.Generator().manual_seed(0)
    video = G.sample(3, torch.tensor([0, 1, 2]), generator=gen)
    assert video.shape == (3, 3, 4, 16, 16)
    if name != "mocogan":  # mocogan draws fresh motion noise per call; sample() covers it below
        video = G(z, torch.tensor([0, 1, 2]))
        assert not torch.allclose(video[0], video[1]) and not torch.allclose(video[1], video[2])
    with pytest.raises(ValueError, match="class-conditional"):
        G(torch.randn(2, Z), None)


@pytest.mark.parametrize("num_classes", [0, 2])
@pytest.mark.parametrize("name", list(GENERATORS))
def test_sample_is_reproducible_with_a_seeded_generator(name, num_classes):
    G = make_g(name, num_classes).eval()
    y = labels(2, num_classes)
    first = G.sample(2, y, generator=torch.Generator().manual_seed(7))
    again = G.sample(2, y, generator=torch.Generator().manual_seed(7))
    other = G.sample(2, y, generator=torch.Generator().manual_seed(8))
    assert torch.equal(first, again) and not torch.allclose(first, other)


@pytest.mark.parametrize("name", list(GENERATORS))
def test_channels_last_3d_changes_the_layout_of_3d_convs_only_not_the_output(name):
    G = make_g(name, 2).eval()
    y = labels(3, 2)
    before = G.sample(3, y, generator=torch.Generator().manual_seed(1))
    to_channels_last_3d(G)
    convs = [m for m in G.modules() if isinstance(m, (torch.nn.Conv3d, torch.nn.ConvTranspose3d))]
    assert all(m.weight.is_contiguous(memory_format=torch.channels_last_3d) for m in convs)
    assert all(m.weight.is_contiguous() for m in G.modules() if isinstance(m, torch.nn.Conv2d))
    after = G.sample(3, y, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["cgan3d", "tgan"])
def test_fixed_length_models_refuse_other_lengths_and_name_mocogan(name):
    G = make_g(name)
    assert G.sample(1, frames=4).shape[2] == 4
    with pytest.raises(ValueError, match=f"{name} cannot change clip length.*mocogan"):
        G.sample(1, frames=8)


def test_mocogan_samples_longer_and_shorter_clips_with_the_same_start():
    G = make_g("mocogan", num_classes=2).eval()
    y = torch.tensor([0, 1])
    long = G.sample(2, y, generator=torch.Generator().manual_seed(3), frames=11)
    short = G.sample(2, y, generator=torch.Generator().manual_seed(3), frames=11)
    assert long.shape == (2, 3, 11, 16, 16) and torch.equal(long, short)
    with pytest.raises(ValueError, match="1..1024"):
        G.sample(1, frames=0)


@pytest.mark.parametrize("cls", list(GENERATORS.values()) + list(DISCRIMINATORS.values()))
def test_check_sizes_names_the_allowed_values(cls):
    cls.check_sizes(8, 16)
    with pytest.raises(ValueError, match=r"supports dataset.frames in \[4, 8, 16, 32\] and "
                                         r"dataset.resolution in \[16, 32, 64, 128, 256\]; got frames=12"):
        cls.check_sizes(12, 64)
    with pytest.raises(ValueError, match="got frames=3, resolution=48"):
        cls.check_sizes(3, 48)


@pytest.mark.parametrize("name", list(GENERATORS))
def test_constructor_checks_sizes_first(name):
    with pytest.raises(ValueError, match=f"model {name} supports.*got resolution=20"):
        make_g(name, resolution=20)


@pytest.mark.parametrize("name", list(GENERATORS))
def test_generator_config_rebuilds_an_identical_model(name):
    G = make_g(name, num_classes=2, block="residual")
    G2 = type(G)(**G.config)
    G2.load_state_dict(G.state_dict(), strict=True)
    G.eval(), G2.eval()
    y = torch.tensor([0, 1])
    a = G.sample(2, y, generator=torch.Generator().manual_seed(1))
    b = G2.sample(2, y, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    assert all(isinstance(v, (int, float, str, bool)) for v in G.config.values())


# --------------------------------------------------------------------------------------------------
# discriminators


@pytest.mark.parametrize("num_classes", [0, 3])
@pytest.mark.parametrize("name", list(DISCRIMINATORS))
def test_discriminator_logits_shape(name, num_classes):
    D = make_d(name, num_classes, frames=8, resolution=32)
    out = heads(D(torch.randn(5, 3, 8, 32, 32), labels(5, num_classes)))
    assert len(out) == (2 if name in ("dual", "mocogan") else 1)
    assert all(o.shape == (5,) and torch.isfinite(o).all() for o in out)


@pytest.mark.parametrize("name", list(DISCRIMINATORS))
def test_projection_makes_logits_depend_on_the_class(name):
    D = make_d(name, num_classes=3)
    video = torch.randn(1, 3, 4, 16, 16).expand(3, -1, -1, -1, -1)
    torch.manual_seed(0)  # the image heads pick random frames: pick the same ones both times
    out = heads(D(video, torch.tensor([0, 1, 2])))
    for head in out:
        assert not torch.allclose(head[0], head[1]) and not torch.allclose(head[1], head[2])
    with pytest.raises(ValueError, match="class-conditional"):
        D(video, None)


@pytest.mark.parametrize("name", list(DISCRIMINATORS))
def test_class_scores_are_the_projection_for_every_class(name):
    D = make_d(name, num_classes=3).eval()
    video, y = torch.randn(4, 3, 4, 16, 16), torch.tensor([0, 1, 2, 1])
    torch.manual_seed(0)
    plain = heads(D(video, y))
    torch.manual_seed(0)
    out, scores = D(video, y, class_scores=True)
    assert scores.shape == (4, 3) and torch.isfinite(scores).all()
    for a, b in zip(plain, heads(out), strict=True):
        torch.testing.assert_close(a, b)
    # the logit for class k minus the logit for class j is scores[k] - scores[j] (summed over heads)
    torch.manual_seed(0)
    other = heads(D(video, torch.zeros_like(y)))
    torch.testing.assert_close(sum(plain) - sum(other), scores.gather(1, y[:, None]).squeeze(1)
                               - scores[:, 0], rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="class scores need a class-conditional"):
        make_d(name, num_classes=0)(video, None, class_scores=True)


@pytest.mark.parametrize("name", list(DISCRIMINATORS))
def test_discriminator_config_round_trip(name):
    D = make_d(name, num_classes=2, block="residual")
    D2 = type(D)(**D.config)
    D2.load_state_dict(D.state_dict(), strict=True)
    video, y = torch.randn(2, 3, 4, 16, 16), torch.tensor([0, 1])
    torch.manual_seed(0)
    a = heads(D.eval()(video, y))
    torch.manual_seed(0)
    b = heads(D2.eval()(video, y))
    assert len(a) == len(b) and all(torch.equal(x, x2) for x, x2 in zip(a, b, strict=True))


def test_dual_spatial_head_sees_full_resolution_and_temporal_head_pooled():
    D = make_d("dual", frames_per_clip=2, video_downsample=2)
    assert D.temporal.body[0].conv1.in_channels == 3 and len(D.temporal.body) == 1  # 8 px -> 4 px
    assert len(D.spatial.body) == 2  # 16 px -> 4 px
    frames = dual.random_frames(torch.arange(4.0).view(1, 1, 4, 1, 1).expand(2, 3, 4, 2, 2), 4)
    assert frames.shape == (8, 3, 2, 2)
    assert sorted(frames[:4, 0, 0, 0].tolist()) == [0, 1, 2, 3]  # distinct frames per clip
    with pytest.raises(ValueError, match="frames_per_clip=5"):
        make_d("dual", frames_per_clip=5)
    with pytest.raises(ValueError, match="video_downsample=4"):
        make_d("dual", video_downsample=4)


# --------------------------------------------------------------------------------------------------
# training steps


def loss_for(kind: str) -> GANLoss:
    return GANLoss(kind=kind, r1_gamma=0.1 if kind == "rpgan" else 0.0,
                   r2_gamma=0.1 if kind == "rpgan" else 0.0)


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: p.detach().clone() for k, p in module.named_parameters()}


def unchanged(module: torch.nn.Module, before: dict[str, torch.Tensor]) -> list[str]:
    # The score bias gets an exactly zero gradient whenever the loss depends on real - fake (wgan,
    # rpgan) or, for hinge, while every logit is inside the margin (as at initialisation).
    return [k for k, p in module.named_parameters()
            if torch.equal(p, before[k]) and not k.endswith("head.linear.bias") and p.requires_grad]


@pytest.mark.parametrize("num_classes", [0, 2])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("g_name, d_name", PAIRS)
def test_one_d_step_and_one_g_step_update_every_parameter(g_name, d_name, kind, num_classes):
    G, D, loss = make_g(g_name, num_classes), make_d(d_name, num_classes), loss_for(kind)
    opt_g = torch.optim.Adam(G.parameters(), 1e-3, betas=(0.0, 0.99))
    opt_d = torch.optim.Adam(D.parameters(), 1e-3, betas=(0.0, 0.99))
    real, y = torch.rand(4, 3, 4, 16, 16) * 2 - 1, labels(4, num_classes)
    g_before, d_before = snapshot(G), snapshot(D)

    fake = G(torch.randn(4, Z), y).detach()
    d_loss = loss.d_loss(D(real, y), D(fake, y))
    penalty = loss.penalty(D, real, fake, y)
    assert (penalty is not None) == (kind in ("rpgan", "wgan_gp"))
    opt_d.zero_grad()
    (d_loss + (penalty if penalty is not None else 0)).backward()
    opt_d.step()

    D.requires_grad_(False)
    real_out = D(real, y) if loss.needs_real_for_g else None
    g_loss = loss.g_loss(D(G(torch.randn(4, Z), y), y), real_out)
    opt_g.zero_grad()
    g_loss.backward()
    opt_g.step()

    assert torch.isfinite(d_loss) and torch.isfinite(g_loss)
    assert unchanged(D, d_before) == []
    assert unchanged(G, g_before) == []


def test_plain_generators_freeze_only_the_biases_batchnorm_cancels():
    """A plain block's conv feeds the next block's BatchNorm: its bias gradient is zero up to
    rounding (checked in float64), so that bias is frozen; every other parameter trains."""
    G = make_g("cgan3d", 2).double()
    frozen = [k for k, p in G.named_parameters() if not p.requires_grad]
    assert frozen == [f"body.blocks.{i}.conv1.bias" for i in range(len(G.body.blocks))]
    assert G.body.to_rgb.conv1.bias.requires_grad  # the RGB layer's bias is not cancelled
    for name in frozen:
        G.get_parameter(name).requires_grad_(True)
    G(torch.randn(4, Z, dtype=torch.float64), labels(4, 2)).square().sum().backward()
    for name in frozen:
        weight_grad = G.get_parameter(name.replace("bias", "weight")).grad
        assert G.get_parameter(name).grad.abs().max() < 1e-9 * weight_grad.abs().max(), name
    assert [k for k, p in make_g("cgan3d", block="residual").named_parameters() if not p.requires_grad] == []


# --------------------------------------------------------------------------------------------------
# configs


@pytest.mark.parametrize("override", ["model=cgan3d", "model=mocogan", "model=tgan",
                                      "model=cgan3d model/discriminator=dual",
                                      "model=mocogan model/discriminator=dual"])
def test_model_yamls_validate_and_instantiate(compose_train, override):
    cfg = compose_train(*override.split())
    validate_train(cfg)
    G, D = instantiate(cfg.model.generator), instantiate(cfg.model.discriminator)
    assert G.config["frames"] == 8 and G.config["resolution"] == 16 and G.config["num_classes"] == 2
    assert (type(D) is dual.DualDiscriminator) == ("dual" in override)
    y = torch.tensor([0, 1])
    video = G(torch.randn(2, G.z_dim), y)
    assert video.shape == (2, 3, 8, 16, 16)
    assert all(o.shape == (2,) for o in heads(D(video, y)))


@pytest.mark.parametrize("shape", [(2, 16, 4, 8, 8), (2, 3, 4, 6, 6), (2, 64, 2, 4, 4), (2, 5, 3, 3, 3)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_per_sample_affine_is_h_times_gain_plus_bias_in_either_format(shape, channels_last):
    torch.manual_seed(0)
    h = torch.randn(shape)
    if channels_last:
        h = h.contiguous(memory_format=torch.channels_last_3d)
    h.requires_grad_(True)
    gain, bias = torch.randn(shape[:2], requires_grad=True), torch.randn(shape[:2], requires_grad=True)
    out = blocks.per_sample_affine(h, gain, bias)
    ref = h.detach() * gain.detach()[..., None, None, None] + bias.detach()[..., None, None, None]
    torch.testing.assert_close(out, ref)
    assert out.is_contiguous(memory_format=torch.channels_last_3d) == channels_last  # format kept
    out.backward(torch.ones_like(out))
    torch.testing.assert_close(bias.grad, torch.full(shape[:2], float(h[0, 0].numel())))
    torch.testing.assert_close(gain.grad, h.detach().flatten(2).sum(2))
    torch.testing.assert_close(h.grad, gain.detach()[..., None, None, None].expand(shape))
