"""Layers shared by the video GANs: class-conditional BatchNorm, spectral norm, up/down blocks.

Plain blocks are DCGAN-style strided (transposed) convolutions: on a CPU a 4x4x4 transposed
convolution costs about half of nearest-upsampling followed by a 3x3x3 convolution (measured with
bf16 autocast and channels_last_3d), which matters because the full-resolution layers dominate.
Residual blocks are BigGAN-style (pre-activation, 1x1x1 skip) for runs with compute to spare.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from vidgan_cli.models.conv import Conv3d, ConvTranspose3d

BLOCK_KINDS = ("plain", "residual")


def sn(module: nn.Module, enabled: bool = True) -> nn.Module:
    """Wrap ``module`` in spectral normalisation when ``enabled`` (its weight gets Lipschitz 1)."""
    return spectral_norm(module) if enabled else module


def check_block_kind(block: str) -> None:
    if block not in BLOCK_KINDS:
        raise ValueError(f"block={block!r} is not one of {', '.join(BLOCK_KINDS)}")


def conv_nd(dims: int) -> type[nn.Module]:
    return Conv3d if dims == 3 else nn.Conv2d


def conv_transpose_nd(dims: int) -> type[nn.Module]:
    return ConvTranspose3d if dims == 3 else nn.ConvTranspose2d


def stride_kernel(dims: int, time_scale: bool) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(kernel, stride) of a x2 resampling conv; time keeps its length when ``time_scale`` is off."""
    if dims == 2:
        return (4, 4), (2, 2)
    return ((4 if time_scale else 3), 4, 4), ((2 if time_scale else 1), 2, 2)


def scale_factor(dims: int, time_scale: bool) -> tuple[float, ...]:
    return (2.0, 2.0) if dims == 2 else ((2.0 if time_scale else 1.0), 2.0, 2.0)


class ConditionalBatchNorm(nn.Module):
    """BatchNorm whose gain and bias are looked up from the class (plain BatchNorm when unconditional)."""

    def __init__(self, channels: int, num_classes: int, dims: int = 3):
        super().__init__()
        self.conditional = num_classes > 0
        bn = nn.BatchNorm3d if dims == 3 else nn.BatchNorm2d
        self.bn = bn(channels, affine=not self.conditional)
        if self.conditional:
            self.gain = nn.Embedding(num_classes, channels)
            self.bias = nn.Embedding(num_classes, channels)
            nn.init.ones_(self.gain.weight)
            nn.init.zeros_(self.bias.weight)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        h = self.bn(x)
        if not self.conditional:
            return h
        if y is None:
            raise ValueError("this model is class-conditional: pass y (class ids [B])")
        # Cast to the activation dtype so bf16 autocast does not promote the whole map to fp32.
        return per_sample_affine(h, self.gain(y).to(h.dtype), self.bias(y).to(h.dtype))


VECTOR_RUN = 32  # elements the CPU kernels want in one contiguous run (a bf16 AVX-512 vector)


def per_sample_affine(h: torch.Tensor, gain: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``h * gain + bias`` for maps ``h`` [B, C, ...] and per-sample, per-channel ``gain``, ``bias`` [B, C].

    In channels_last_3d the broadcast runs over C innermost, and with fewer channels than a vector
    (C=16 in bf16) torch's CPU kernels fall back to scalar loops: at 16x16x16x32x32 the add took 5 ms
    instead of 0.4 in NCDHW. Folding k positions into that run (the parameters tiled k times) gives
    them full vectors: mul + add then take 1.4 ms, 4.8 with their backward. (``addcmul`` would be one
    op forward, but its backward took 13 ms.)
    """
    b, c = h.shape[:2]
    positions = h[0, 0].numel()
    k = -(-VECTOR_RUN // c)  # positions per run
    if h.dim() == 5 and c < VECTOR_RUN and positions % k == 0 and \
            h.is_contiguous(memory_format=torch.channels_last_3d):
        runs = h.permute(0, 2, 3, 4, 1).reshape(b, positions // k, k * c)  # a view
        out = runs * gain.repeat(1, k)[:, None] + bias.repeat(1, k)[:, None]
        return out.view(b, *h.shape[2:], c).permute(0, 4, 1, 2, 3)
    shape = (b, c) + (1,) * (h.dim() - 2)
    return h * gain.view(shape) + bias.view(shape)


class UpBlock(nn.Module):
    """x2 spatial (and optionally temporal) upsampling with class-conditional norm, pre-activation.

    plain:    CBN -> ReLU -> transposed conv [-> tanh, for a generator's RGB output: ``tanh``]
    residual: CBN -> ReLU -> nearest up -> conv3 -> CBN -> ReLU -> conv3, plus nearest up -> conv1 skip
    """

    def __init__(self, in_ch: int, out_ch: int, num_classes: int, *, dims: int = 3,
                 time_up: bool = False, block: str = "plain", spectral: bool = False,
                 tanh: bool = False):
        super().__init__()
        check_block_kind(block)
        if tanh and block != "plain":
            raise ValueError("UpBlock(tanh=True) is the plain generators' RGB layer; block must be plain")
        self.residual, self.tanh = block == "residual", tanh
        self.scale = scale_factor(dims, time_up)
        self.norm1 = ConditionalBatchNorm(in_ch, num_classes, dims)
        if self.residual:
            conv = conv_nd(dims)
            self.conv1 = sn(conv(in_ch, out_ch, 3, padding=1), spectral)
            self.norm2 = ConditionalBatchNorm(out_ch, num_classes, dims)
            self.conv2 = sn(conv(out_ch, out_ch, 3, padding=1), spectral)
            self.skip = sn(conv(in_ch, out_ch, 1), spectral)
        else:
            kernel, stride = stride_kernel(dims, time_up)
            self.conv1 = sn(conv_transpose_nd(dims)(in_ch, out_ch, kernel, stride, padding=1), spectral)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        h = F.relu(self.norm1(x, y))
        if not self.residual:
            if not self.tanh:
                return self.conv1(h)
            # ours fuses the tanh into the convolution (conv.ConvTranspose3d)
            return self.conv1(h, tanh=True) if isinstance(self.conv1, ConvTranspose3d) else \
                torch.tanh(self.conv1(h))
        h = self.conv1(F.interpolate(h, scale_factor=self.scale, mode="nearest"))
        h = self.conv2(F.relu(self.norm2(h, y)))
        return h + self.skip(F.interpolate(x, scale_factor=self.scale, mode="nearest"))


class DownBlock(nn.Module):
    """x2 spatial (and optionally temporal) downsampling for discriminators, no normalisation.

    plain:    [LReLU ->] strided conv4
    residual: [LReLU ->] conv3 -> LReLU -> conv3 -> avg-pool, plus conv1 -> avg-pool skip
    The first block of a discriminator sees pixels, so it skips the leading activation.
    """

    def __init__(self, in_ch: int, out_ch: int, *, dims: int = 3, time_down: bool = False,
                 block: str = "plain", spectral: bool = True, preactivate: bool = True):
        super().__init__()
        check_block_kind(block)
        self.residual = block == "residual"
        self.preactivate = preactivate
        self.pool = scale_factor(dims, time_down)
        conv = conv_nd(dims)
        if self.residual:
            self.conv1 = sn(conv(in_ch, out_ch, 3, padding=1), spectral)
            self.conv2 = sn(conv(out_ch, out_ch, 3, padding=1), spectral)
            self.skip = sn(conv(in_ch, out_ch, 1), spectral)
        else:
            kernel, stride = stride_kernel(dims, time_down)
            self.conv1 = sn(conv(in_ch, out_ch, kernel, stride, padding=1), spectral)

    def _downsample(self, x: torch.Tensor) -> torch.Tensor:
        kernel = tuple(int(s) for s in self.pool)
        return F.avg_pool3d(x, kernel) if x.dim() == 5 else F.avg_pool2d(x, kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.leaky_relu(x, 0.2) if self.preactivate else x
        if not self.residual:
            return self.conv1(h)
        h = self.conv2(F.leaky_relu(self.conv1(h), 0.2))
        return self._downsample(h) + self._downsample(self.skip(x))


class ProjectionHead(nn.Module):
    """Global sum pooling, a linear score and the projection term <embed(y), h> (Miyato & Koyama 2018).

    With ``class_scores=True`` it also returns ``h @ embed.T`` ``[B, num_classes]``: the projection
    term for every class, which the auxiliary class loss (``loss.class_weight``) treats as logits.
    """

    def __init__(self, channels: int, num_classes: int, spectral: bool = True):
        super().__init__()
        self.linear = sn(nn.Linear(channels, 1), spectral)
        self.embed = sn(nn.Embedding(num_classes, channels), spectral) if num_classes > 0 else None

    def forward(self, features: torch.Tensor, y: torch.Tensor | None, class_scores: bool = False):
        h = F.leaky_relu(features, 0.2).flatten(2).sum(2)  # [B, C]
        out = self.linear(h).squeeze(1)
        if self.embed is None:
            if class_scores:
                raise ValueError("class scores need a class-conditional discriminator (num_classes > 0)")
            return out
        if y is None:
            raise ValueError("this discriminator is class-conditional: pass y (class ids [B])")
        scores = h @ self.embed.weight.to(h.dtype).t()  # [B, num_classes]; <embed(y), h> for every y
        out = out + scores.gather(1, y[:, None]).squeeze(1)
        return (out, scores) if class_scores else out


def stage_widths(base_channels: int, max_channels: int, n: int) -> list[int]:
    """Widths from fine to coarse: base, 2*base, 4*base ... capped at max_channels (n + 1 entries)."""
    return [min(max_channels, base_channels * 2 ** i) for i in range(n + 1)]


def time_steps(frames: int, n: int) -> list[bool]:
    """Which of n resampling stages also rescale time: the first k, leaving >= 2 frames at the end.

    Generators list their stages coarse to fine and discriminators fine to coarse, so time is
    resampled where the maps are smallest in G and where they are largest (cheapest to shrink) in D.
    """
    k = min(n, frames.bit_length() - 2)  # log2(frames) - 1 for powers of two
    return [i < k for i in range(n)]


def check_allowed_sizes(model: str, frames: int, resolution: int, allowed_frames, allowed_resolutions) -> None:
    """Raise ValueError naming every allowed value when frames or resolution is not supported."""
    wrong = [f"{key}={value}" for key, value, allowed in
             (("frames", frames, allowed_frames), ("resolution", resolution, allowed_resolutions))
             if value not in allowed]
    if wrong:
        raise ValueError(f"model {model} supports dataset.frames in {list(allowed_frames)} and "
                         f"dataset.resolution in {list(allowed_resolutions)}; got {', '.join(wrong)}")


def module_device(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


def to_channels_last_3d(module: nn.Module) -> nn.Module:
    """channels_last_3d for the 3D convolutions only (2D layers of image generators keep theirs).

    On the development CPU it made training steps 1-25 % faster and sampling 15-26 % (README,
    Performance).
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d)):
            m.to(memory_format=torch.channels_last_3d)
    return module


def num_stages(resolution: int) -> int:
    """x2 stages between a 4x4 base and ``resolution`` (a power of two >= 8)."""
    return resolution.bit_length() - 3


class RGBHead(nn.Module):
    """CBN -> ReLU -> 3x3 conv to RGB -> tanh: the output layer of residual generators."""

    def __init__(self, channels: int, num_classes: int, spectral: bool, dims: int = 3):
        super().__init__()
        self.norm = ConditionalBatchNorm(channels, num_classes, dims)
        self.conv = sn(conv_nd(dims)(channels, 3, 3, padding=1), spectral)

    def forward(self, h: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        return torch.tanh(self.conv(F.relu(self.norm(h, y))))


class UpStack(nn.Module):
    """[N, C0, (t0,) 4, 4] -> RGB [N, 3, (T,) R, R] in [-1, 1]: the upsampling body of every generator.

    Plain: the last x2 stage is the RGB layer itself, so no wide full-resolution feature map is
    ever built (it would dominate the cost); residual: n feature stages and a 3x3 RGB conv.
    ``base_channels`` is the width of the finest feature map, doubling per coarser stage.
    """

    def __init__(self, num_classes: int, resolution: int, base_channels: int, max_channels: int,
                 block: str, spectral: bool, dims: int = 3, time_up: list[bool] | None = None):
        super().__init__()
        check_block_kind(block)
        n = num_stages(resolution)
        time_up = time_up or [False] * n
        n_features = n - 1 if block == "plain" else n
        widths = stage_widths(base_channels, max_channels, n_features)[::-1]  # coarse -> fine
        self.in_channels = widths[0]
        self.blocks = nn.ModuleList(
            UpBlock(widths[i], widths[i + 1], num_classes, dims=dims, time_up=time_up[i], block=block,
                    spectral=spectral)
            for i in range(n_features))
        if block == "plain":
            # A plain block's convolution feeds the next block's BatchNorm, which subtracts the batch
            # mean of every channel: its bias has gradient zero (in floating point, rounding noise
            # that Adam would scale up to full-size steps). It stays at its initial value, and the
            # step skips its gradient (a reduction over the layer's output).
            for b in self.blocks:
                b.conv1.bias.requires_grad_(False)
            self.to_rgb = UpBlock(widths[-1], 3, num_classes, dims=dims, time_up=time_up[-1],
                                  spectral=spectral, tanh=True)
        else:
            self.to_rgb = RGBHead(widths[-1], num_classes, spectral, dims)

    def forward(self, h: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        for block in self.blocks:
            h = block(h, y)
        return self.to_rgb(h, y)


class DownStack(nn.Sequential):
    """RGB [N, 3, (T,) R, R] -> features [N, C, (t,) 4, 4]: the body of every discriminator."""

    def __init__(self, resolution: int, base_channels: int, max_channels: int, block: str,
                 spectral: bool, dims: int = 3, time_down: list[bool] | None = None):
        check_block_kind(block)
        n = num_stages(resolution)
        time_down = time_down or [False] * n
        widths = [3] + stage_widths(base_channels, max_channels, n - 1)
        super().__init__(*(
            DownBlock(widths[i], widths[i + 1], dims=dims, time_down=time_down[i], block=block,
                      spectral=spectral, preactivate=i > 0)
            for i in range(n)))
        self.out_channels = widths[-1]


class FrameGenerator(nn.Module):
    """A 2D image generator: frame latents [N, latent_dim] (+ class [N]) -> frames [N, 3, R, R] in [-1, 1].

    MoCoGAN and TGAN render every frame of a clip with it (frames folded into the batch).
    """

    def __init__(self, latent_dim: int, num_classes: int, resolution: int, base_channels: int,
                 max_channels: int, block: str, spectral: bool):
        super().__init__()
        self.body = UpStack(num_classes, resolution, base_channels, max_channels, block, spectral, dims=2)
        self.stem = sn(nn.Linear(latent_dim, self.body.in_channels * 16), spectral)

    def forward(self, latents: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        h = self.stem(latents).view(latents.shape[0], -1, 4, 4)
        return self.body(h, y)


def frames_to_video(frames: torch.Tensor, batch: int) -> torch.Tensor:
    """[B*T, 3, H, W] -> [B, 3, T, H, W]."""
    return frames.view(batch, -1, *frames.shape[1:]).transpose(1, 2)


def repeat_per_frame(y: torch.Tensor | None, frames: int) -> torch.Tensor | None:
    return None if y is None else y.repeat_interleave(frames)


def sample_trained_length(G: nn.Module, name: str, n: int, y: torch.Tensor | None,
                          generator: torch.Generator | None, frames: int | None) -> torch.Tensor:
    """``G.sample`` for generators whose clip length is fixed by their architecture."""
    if frames is not None and frames != G.frames:
        raise ValueError(f"{name} cannot change clip length: it generates the {G.frames} frames it "
                         f"was trained on (asked for {frames}); mocogan can generate longer clips")
    z = torch.randn(n, G.z_dim, generator=generator, device=module_device(G))
    return G(z, y)
