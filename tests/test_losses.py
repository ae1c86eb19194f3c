"""Losses against hand-computed values; regularizers against a toy D with an analytic gradient."""

from __future__ import annotations

import math

import pytest
import torch
from hydra.utils import instantiate

from vidgan_cli import losses
from vidgan_cli.config import validate_train
from vidgan_cli.losses import GANLoss

REAL = torch.tensor([1.0, -2.0])
FAKE = torch.tensor([0.5, -1.0])


def softplus(v: float) -> float:
    return math.log1p(math.exp(v))


def test_bce_d_matches_hand_computation():
    expected = (softplus(-1.0) + softplus(2.0)) / 2 + (softplus(0.5) + softplus(-1.0)) / 2
    assert losses.bce_d(REAL, FAKE).item() == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(1.863764, abs=1e-5)


def test_bce_generator_losses():
    # non-saturating: -log sigmoid(fake); minimax: log(1 - sigmoid(fake)) = -softplus(fake)
    assert losses.bce_g_nonsaturating(FAKE).item() == pytest.approx(
        (softplus(-0.5) + softplus(1.0)) / 2, rel=1e-6)
    assert losses.bce_g_minimax(FAKE).item() == pytest.approx(
        -(softplus(0.5) + softplus(-1.0)) / 2, rel=1e-6)


def test_lsgan_values():
    # D: 0.5 * mean((real-1)^2) + 0.5 * mean(fake^2) = 0.5 * (0 + 9)/2 + 0.5 * (0.25 + 1)/2
    assert losses.lsgan_d(REAL, FAKE).item() == pytest.approx(2.25 + 0.3125)
    # G: 0.5 * mean((fake-1)^2) = 0.5 * (0.25 + 4)/2
    assert losses.lsgan_g(FAKE).item() == pytest.approx(1.0625)


def test_hinge_values():
    # relu(1 - [1, -2]) = [0, 3]; relu(1 + [0.5, -1]) = [1.5, 0]
    assert losses.hinge_d(REAL, FAKE).item() == pytest.approx(1.5 + 0.75)
    assert losses.hinge_g(FAKE).item() == pytest.approx(0.25)


def test_wgan_values():
    assert losses.wgan_d(REAL, FAKE).item() == pytest.approx(-0.25 - (-0.5))
    assert losses.wgan_g(FAKE).item() == pytest.approx(0.25)


def test_rpgan_values_pair_clips():
    # real - fake = [0.5, -1.0]
    assert losses.rpgan_d(REAL, FAKE).item() == pytest.approx((softplus(-0.5) + softplus(1.0)) / 2)
    assert losses.rpgan_g(FAKE, REAL).item() == pytest.approx((softplus(0.5) + softplus(-1.0)) / 2)


def test_heads_are_summed():
    loss = GANLoss(kind="hinge")
    two = loss.d_loss((REAL, REAL * 2), (FAKE, FAKE * 2))
    assert two.item() == pytest.approx(losses.hinge_d(REAL, FAKE).item()
                                       + losses.hinge_d(REAL * 2, FAKE * 2).item())
    assert loss.g_loss((FAKE, FAKE)).item() == pytest.approx(0.5)


def test_minimax_option_selects_minimax_generator_loss():
    assert GANLoss(kind="bce", minimax=True).g_loss(FAKE).item() == pytest.approx(
        losses.bce_g_minimax(FAKE).item())
    assert GANLoss(kind="bce").g_loss(FAKE).item() == pytest.approx(
        losses.bce_g_nonsaturating(FAKE).item())


def test_rpgan_needs_real_in_generator_step():
    loss = GANLoss(kind="rpgan")
    assert loss.needs_real_for_g and not GANLoss(kind="hinge").needs_real_for_g
    assert loss.g_loss(FAKE, REAL).item() == pytest.approx(losses.rpgan_g(FAKE, REAL).item())
    with pytest.raises(ValueError, match="needs D\\(real\\)"):
        loss.g_loss(FAKE)


def test_kind_defaults_and_errors():
    wgan = GANLoss(kind="wgan_gp")
    assert (wgan.n_critic, wgan.gp_weight) == (5, 10.0)
    hinge = GANLoss(kind="hinge")
    assert (hinge.n_critic, hinge.gp_weight, hinge.reg_every) == (1, 0.0, 1)
    assert not hinge.regularized and GANLoss(kind="wgan_gp").regularized
    assert GANLoss(r1_gamma=1.0).regularized and GANLoss(r2_gamma=1.0).regularized
    with pytest.raises(ValueError, match="bce, lsgan, hinge, wgan_gp, rpgan"):
        GANLoss(kind="nonsense")
    with pytest.raises(ValueError, match="minimax"):
        GANLoss(kind="hinge", minimax=True)
    with pytest.raises(ValueError, match="r1_gamma"):
        GANLoss(r1_gamma=-1.0)


def test_class_loss_is_weighted_cross_entropy_of_the_class_scores():
    scores = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]])
    y = torch.tensor([0, 1])
    # hand-computed: -log softmax(scores)[y], averaged
    row0 = -(2.0 - math.log(math.exp(2.0) + math.exp(0.0) + math.exp(-1.0)))
    row1 = -(0.5 - math.log(2 * math.exp(0.5) + math.exp(3.0)))
    loss = GANLoss(kind="rpgan", class_weight=0.5).class_loss(scores, y)
    assert loss.item() == pytest.approx(0.5 * (row0 + row1) / 2, rel=1e-6)
    with pytest.raises(ValueError, match="class_weight must be >= 0"):
        GANLoss(class_weight=-1.0)


class LinearD(torch.nn.Module):
    """D(x) = sum(w * x) per sample (optionally two heads): grad_x D = w everywhere."""

    def __init__(self, shape, heads: int = 1):
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.weights = torch.nn.ParameterList(torch.nn.Parameter(torch.randn(shape, generator=gen))
                                              for _ in range(heads))

    def forward(self, x, y=None):
        outs = tuple((w * x).flatten(1).sum(1) for w in self.weights)
        return outs if len(outs) > 1 else outs[0]


SHAPE = (3, 2, 4, 4)


def clips(seed: int) -> torch.Tensor:
    return torch.randn((5,) + SHAPE, generator=torch.Generator().manual_seed(seed))


def test_r1_and_r2_are_gamma_half_squared_weight_norm():
    D = LinearD(SHAPE)
    w_sq = D.weights[0].detach().square().sum().item()
    r1 = GANLoss(r1_gamma=4.0).penalty(D, clips(1), clips(2), None)
    assert r1.item() == pytest.approx(4.0 / 2 * w_sq, rel=1e-5)
    r2 = GANLoss(r2_gamma=0.5).penalty(D, clips(1), clips(2), None)
    assert r2.item() == pytest.approx(0.5 / 2 * w_sq, rel=1e-5)
    both = GANLoss(r1_gamma=4.0, r2_gamma=0.5).penalty(D, clips(1), clips(2), None)
    assert both.item() == pytest.approx((2.0 + 0.25) * w_sq, rel=1e-5)


@pytest.mark.parametrize("channels_last", [False, True])
def test_squared_norm_gradient_is_twice_g_and_keeps_the_memory_format(channels_last):
    torch.manual_seed(0)
    g = torch.randn(3, 2, 4, 5, 6, dtype=torch.float64)
    if channels_last:
        g = g.contiguous(memory_format=torch.channels_last_3d)
    g.requires_grad_(True)
    norm = losses._SquaredNorm.apply(g)
    torch.testing.assert_close(norm, g.detach().square().flatten(1).sum(1))
    w = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    (grad,) = torch.autograd.grad(norm, g, w)
    torch.testing.assert_close(grad, 2 * g.detach() * w.view(3, 1, 1, 1, 1))
    fmt = torch.channels_last_3d if channels_last else torch.contiguous_format
    assert grad.is_contiguous(memory_format=fmt)  # the R1/R2 double backward stays in the format
    assert torch.autograd.gradcheck(losses._SquaredNorm.apply, [g])


def test_squared_norm_sums_bf16_squares_in_fp32():
    g = torch.full((2, 3, 64, 64), 0.01, dtype=torch.bfloat16)
    norm = losses._SquaredNorm.apply(g)
    assert norm.dtype == torch.float32
    square = torch.tensor(0.01, dtype=torch.bfloat16).square().float()  # squared in bf16
    expected = 3 * 64 * 64 * square  # summed without bf16 rounding (a bf16 result is 0.3 % off here)
    torch.testing.assert_close(norm, expected.expand(2), rtol=1e-5, atol=0)


class TanhD(torch.nn.Module):
    """D(x) = sum(tanh(w * x)) per sample: its input gradient depends on x."""

    def __init__(self, shape):
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(shape, generator=torch.Generator().manual_seed(0)))

    def forward(self, x, y=None):
        return torch.tanh(self.w * x).flatten(1).sum(1)


def test_penalty_on_given_outputs_equals_its_own_forward():
    """The D step hands R1/R2 the outputs of its own forward: same values, same weight gradients."""
    D, loss = TanhD(SHAPE), GANLoss(kind="rpgan", r1_gamma=2.0, r2_gamma=0.5)
    own = loss.penalty(D, clips(1), clips(2), None)
    (own_grad,) = torch.autograd.grad(own, D.w)
    real, fake = loss.penalty_inputs(clips(1), clips(2))
    assert real.requires_grad and fake.requires_grad
    given = loss.penalty(D, real, fake, None, D(real), D(fake))
    (given_grad,) = torch.autograd.grad(given, D.w)
    torch.testing.assert_close(given, own)
    torch.testing.assert_close(given_grad, own_grad)
    # R1 only: the fakes need no input gradient
    real, fake = GANLoss(r1_gamma=1.0).penalty_inputs(clips(1), clips(2))
    assert real.requires_grad and not fake.requires_grad
    with pytest.raises(ValueError, match="needs the input they came from, with requires_grad"):
        loss.penalty(D, clips(1), clips(2), None, D(clips(1)), D(clips(2)))


def test_penalty_sums_heads_before_differentiating():
    D = LinearD(SHAPE, heads=2)
    w_sum_sq = (D.weights[0] + D.weights[1]).detach().square().sum().item()
    r1 = GANLoss(r1_gamma=2.0).penalty(D, clips(1), clips(2), None)
    assert r1.item() == pytest.approx(w_sum_sq, rel=1e-5)


def test_gradient_penalty_is_squared_distance_of_norm_from_one():
    D = LinearD(SHAPE)
    w_norm = D.weights[0].detach().norm().item()
    gp = GANLoss(kind="wgan_gp").penalty(D, clips(1), clips(2), None)
    assert gp.item() == pytest.approx(10.0 * (w_norm - 1) ** 2, rel=1e-5)


def test_penalty_is_none_without_regularizer_and_differentiable_with_one():
    D = LinearD(SHAPE)
    assert GANLoss(kind="hinge").penalty(D, clips(1), clips(2), None) is None
    r1 = GANLoss(r1_gamma=1.0).penalty(D, clips(1), clips(2), None)
    r1.backward()
    # d/dw (1/2 ||w||^2) = w
    assert torch.allclose(D.weights[0].grad, D.weights[0].detach(), atol=1e-5)


@pytest.mark.parametrize("name", ["bce", "lsgan", "hinge", "wgan_gp", "rpgan"])
def test_every_loss_yaml_validates_and_instantiates(compose_train, name):
    cfg = compose_train(f"loss={name}")
    validate_train(cfg)  # every key is a GANLoss argument
    loss = instantiate(cfg.loss)
    assert isinstance(loss, GANLoss) and loss.kind == name
    assert loss.needs_real_for_g == (name == "rpgan")
    assert loss.n_critic == (5 if name == "wgan_gp" else 1)
