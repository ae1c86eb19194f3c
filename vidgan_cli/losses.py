"""Adversarial objectives and the regularizers (R1, R2, gradient penalty) used with them.

The objectives are pure functions of discriminator logits, so they can be checked by hand;
:class:`GANLoss` (instantiated from ``conf/loss/<name>.yaml``) picks a pair of them, sums them over
the discriminator's heads and adds the weighted regularizers the trainer asks for.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

Heads = torch.Tensor | Sequence[torch.Tensor]

# --------------------------------------------------------------------------------------------------
# objectives on logits (each returns a scalar; lower is better for the player that minimises it)


def bce_d(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """-log sigmoid(real) - log(1 - sigmoid(fake)), written with softplus for stability."""
    return F.softplus(-real).mean() + F.softplus(fake).mean()


def bce_g_nonsaturating(fake: torch.Tensor) -> torch.Tensor:
    """-log sigmoid(fake): strong gradients while D still rejects the fakes (Goodfellow et al. 2014)."""
    return F.softplus(-fake).mean()


def bce_g_minimax(fake: torch.Tensor) -> torch.Tensor:
    """log(1 - sigmoid(fake)) = -softplus(fake): the original zero-sum objective."""
    return -F.softplus(fake).mean()


def lsgan_d(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Least squares with targets 1 for real and 0 for fake (Mao et al. 2017)."""
    return 0.5 * (real - 1).square().mean() + 0.5 * fake.square().mean()


def lsgan_g(fake: torch.Tensor) -> torch.Tensor:
    return 0.5 * (fake - 1).square().mean()


def hinge_d(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return F.relu(1 - real).mean() + F.relu(1 + fake).mean()


def hinge_g(fake: torch.Tensor) -> torch.Tensor:
    return -fake.mean()


def wgan_d(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Negated Wasserstein-1 estimate; needs a Lipschitz critic (gradient penalty)."""
    return fake.mean() - real.mean()


def wgan_g(fake: torch.Tensor) -> torch.Tensor:
    return -fake.mean()


def rpgan_d(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Relativistic pairing: each real clip should score above the fake clip it is paired with."""
    return F.softplus(-(real - fake)).mean()


def rpgan_g(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    return F.softplus(-(fake - real)).mean()


# --------------------------------------------------------------------------------------------------
# regularizers


def sum_heads(out: Heads) -> torch.Tensor:
    return sum(out) if isinstance(out, (tuple, list)) else out


def input_gradient_sq_norm(D: Callable, x: torch.Tensor, y: torch.Tensor | None,
                           out: Heads | None = None) -> torch.Tensor:
    """||d D(x) / dx||^2 per sample [B] (heads summed), differentiable for the penalty's backward.

    ``out``: D(x, y) already computed from an ``x`` that requires grad (the D step's own forward),
    so the penalty costs no second D forward, and its weight gradients come in the same backward.
    """
    if out is None:
        x = x.detach().requires_grad_(True)
        out = D(x, y)
    elif not x.requires_grad:
        raise ValueError("a penalty on given D outputs needs the input they came from, with requires_grad")
    score = sum_heads(out).float().sum()
    (grad,) = torch.autograd.grad(score, x, create_graph=True)
    return _SquaredNorm.apply(grad)


class _SquaredNorm(torch.autograd.Function):
    """Per-sample squared norm [B] of ``g`` [B, ...]: squares in the dtype of ``g``, summed in fp32
    (or fp64).

    No fp32 copy of a full-size bf16 gradient (R1 + R2 with their backward: 15 -> 9 ms at 16x64x64;
    the norm moves by ~1e-4 relative), and a backward that keeps the memory format of ``g``: autograd's
    own (an expand cast back to bf16) materialises an NCDHW tensor, after which the whole double
    backward through D ran in NCDHW, not channels-last.
    """

    @staticmethod
    def forward(ctx, g):
        ctx.save_for_backward(g)
        return g.square().sum(tuple(range(1, g.dim())), dtype=torch.promote_types(g.dtype, torch.float32))

    @staticmethod
    def backward(ctx, grad):
        (g,) = ctx.saved_tensors
        return g * (2 * grad).to(g.dtype).view(-1, *[1] * (g.dim() - 1))


def r1_penalty(D: Callable, real: torch.Tensor, y: torch.Tensor | None, gamma: float,
               real_out: Heads | None = None) -> torch.Tensor:
    """gamma/2 * E||grad D(real)||^2: zero-centred on reals (Mescheder et al. 2018)."""
    return 0.5 * gamma * input_gradient_sq_norm(D, real, y, real_out).mean()


def r2_penalty(D: Callable, fake: torch.Tensor, y: torch.Tensor | None, gamma: float,
               fake_out: Heads | None = None) -> torch.Tensor:
    """The same on fakes; with R1 it makes the relativistic loss converge locally (R3GAN, 2024)."""
    return 0.5 * gamma * input_gradient_sq_norm(D, fake, y, fake_out).mean()


def gradient_penalty(D: Callable, real: torch.Tensor, fake: torch.Tensor, y: torch.Tensor | None,
                     weight: float) -> torch.Tensor:
    """weight * E(||grad D(x_hat)|| - 1)^2 on random interpolates (Gulrajani et al. 2017)."""
    shape = (real.shape[0],) + (1,) * (real.dim() - 1)
    eps = torch.rand(shape, device=real.device, dtype=real.dtype)
    mixed = eps * real.detach() + (1 - eps) * fake.detach()
    norm = input_gradient_sq_norm(D, mixed, y).add(1e-12).sqrt()
    return weight * (norm - 1).square().mean()


# --------------------------------------------------------------------------------------------------
# the object the trainer uses

KINDS = ("bce", "lsgan", "hinge", "wgan_gp", "rpgan")
D_OBJECTIVES = {"bce": bce_d, "lsgan": lsgan_d, "hinge": hinge_d, "wgan_gp": wgan_d, "rpgan": rpgan_d}
G_OBJECTIVES = {"bce": bce_g_nonsaturating, "lsgan": lsgan_g, "hinge": hinge_g, "wgan_gp": wgan_g}
# What a kind implies unless the config says otherwise (WGAN-GP: Gulrajani et al.'s settings).
DEFAULT_N_CRITIC = {"wgan_gp": 5}
DEFAULT_GP_WEIGHT = {"wgan_gp": 10.0}


def as_tuple(out: Heads) -> tuple[torch.Tensor, ...]:
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


class GANLoss:
    """An adversarial objective plus optional regularizers, as the trainer's contract asks.

    ``n_critic`` and ``gp_weight`` default to the kind's usual values (5 and 10 for wgan_gp,
    1 and 0 otherwise); ``r1_gamma``, ``r2_gamma`` and ``gp_weight`` work with every kind.
    """

    def __init__(self, kind: str = "hinge", minimax: bool = False, r1_gamma: float = 0.0,
                 r2_gamma: float = 0.0, gp_weight: float | None = None, reg_every: int = 1,
                 n_critic: int | None = None, class_weight: float = 0.0):
        if kind not in KINDS:
            raise ValueError(f"loss.kind={kind!r} is not one of {', '.join(KINDS)}")
        if minimax and kind != "bce":
            raise ValueError(f"loss.minimax applies to kind=bce only (got kind={kind})")
        self.n_critic = DEFAULT_N_CRITIC.get(kind, 1) if n_critic is None else int(n_critic)
        self.gp_weight = DEFAULT_GP_WEIGHT.get(kind, 0.0) if gp_weight is None else float(gp_weight)
        for key, value in (("r1_gamma", r1_gamma), ("r2_gamma", r2_gamma), ("gp_weight", self.gp_weight),
                           ("class_weight", class_weight)):
            if value < 0:
                raise ValueError(f"loss.{key} must be >= 0; got {value}")
        if self.n_critic < 1 or reg_every < 1:
            raise ValueError(f"loss.n_critic and loss.reg_every must be >= 1; got n_critic="
                             f"{self.n_critic}, reg_every={reg_every}")
        self.kind, self.r1_gamma, self.r2_gamma = kind, float(r1_gamma), float(r2_gamma)
        self.reg_every, self.class_weight = int(reg_every), float(class_weight)
        self.needs_real_for_g = kind == "rpgan"
        self._d = D_OBJECTIVES[kind]
        self._g = bce_g_minimax if minimax else G_OBJECTIVES.get(kind)

    def d_loss(self, real_out: Heads, fake_out: Heads) -> torch.Tensor:
        return sum(self._d(r.float(), f.float()) for r, f in zip(as_tuple(real_out), as_tuple(fake_out),
                                                                 strict=True))

    def g_loss(self, fake_out: Heads, real_out: Heads | None = None) -> torch.Tensor:
        fakes = as_tuple(fake_out)
        if not self.needs_real_for_g:
            return sum(self._g(f.float()) for f in fakes)
        if real_out is None:
            raise ValueError(f"loss kind={self.kind} needs D(real) in the generator step")
        return sum(rpgan_g(f.float(), r.float().detach()) for f, r in zip(fakes, as_tuple(real_out),
                                                                         strict=True))

    def class_loss(self, scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``class_weight`` x cross-entropy of D's class scores: on reals it teaches D the classes, on
        fakes it asks G for clips D files under their own class (AC-GAN, Odena et al. 2017, here
        through the projection embedding, so no extra head)."""
        return self.class_weight * F.cross_entropy(scores.float(), y)

    @property
    def regularized(self) -> bool:
        """Whether any regularizer is on (R1, R2 or the gradient penalty): what ``penalty`` computes,
        on every ``reg_every``-th D step."""
        return self.r1_gamma > 0 or self.r2_gamma > 0 or self.gp_weight > 0

    def penalty(self, D: Callable, real: torch.Tensor, fake: torch.Tensor, y: torch.Tensor | None,
                real_out: Heads | None = None, fake_out: Heads | None = None) -> torch.Tensor | None:
        """The weighted sum of the enabled regularizers, or None when there is none.

        ``real_out``/``fake_out``: D's outputs for ``real``/``fake`` when those already require grad
        (see ``penalty_inputs``); R1/R2 then differentiate them instead of running D again.
        """
        terms = []
        if self.r1_gamma > 0:
            terms.append(r1_penalty(D, real, y, self.r1_gamma, real_out))
        if self.r2_gamma > 0:
            terms.append(r2_penalty(D, fake, y, self.r2_gamma, fake_out))
        if self.gp_weight > 0:
            terms.append(gradient_penalty(D, real, fake, y, self.gp_weight))
        return sum(terms) if terms else None

    def penalty_inputs(self, real: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``real`` and ``fake`` as leaves that require grad where R1 / R2 will differentiate D's
        outputs for them: a D step that feeds these to D can pass its outputs to ``penalty``."""
        return (real.detach().requires_grad_(self.r1_gamma > 0),
                fake.detach().requires_grad_(self.r2_gamma > 0))

    def __repr__(self) -> str:
        return (f"GANLoss(kind={self.kind}, n_critic={self.n_critic}, r1_gamma={self.r1_gamma}, "
                f"r2_gamma={self.r2_gamma}, gp_weight={self.gp_weight}, reg_every={self.reg_every}, "
                f"class_weight={self.class_weight})")
