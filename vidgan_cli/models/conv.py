"""The 3D convolutions the models are built from: ``nn.Conv3d``/``nn.ConvTranspose3d`` with the same
parameters and state dicts, that route a few shapes around slow CPU kernels (torch 2.13, oneDNN).

- ``Conv3d`` pads a time axis shorter than its kernel itself (a bf16 NaN-gradient workaround).
- Layers with an RGB side (≤ 4 channels) compute the thin side's results in sub-pixel form.
- ``ConvTranspose3d`` sums its bias gradient itself.
Every figure quoted here was measured at batch 16 with 2 threads on the development CPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Convolutions with an RGB side
#
# oneDNN (torch's CPU convolutions) is slow whenever a transposed convolution produces only a few
# channels: the RGB output layer of a generator, and the input gradient of a discriminator's first
# layer. Both are computed here in sub-pixel form instead (see conv_transpose3d_subpixel); the
# directions that are fast as they are (a convolution *from* 3 channels) keep the direct kernels.
# Measured at batch 16, bf16, channels_last_3d, 2 threads:
#   G's RGB layer 16x32x32 -> 16x64x64, 16 -> 3 channels: forward 25.7 ms -> 10.6
#   D's first layer input gradient, 16 -> 3 channels to 16x64x64: 21.7 ms -> 10.9

THIN_CHANNELS = 4  # a side with at most this many channels counts as the RGB side


def subpixel_axes(kernel, stride, padding) -> list[bool] | None:
    """Which axes are x2 resampling with kernel 4 and padding 1 (the sub-pixel ones); None unless
    at least one is and every other axis has stride 1."""
    axes = []
    for k, st, p in zip(kernel, stride, padding, strict=True):
        if st == 2 and k == 4 and p == 1:
            axes.append(True)
        elif st == 1:
            axes.append(False)
        else:
            return None
    return axes if any(axes) else None


def conv_transpose3d_subpixel(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                              stride, padding) -> torch.Tensor:
    """``F.conv_transpose3d(x, weight, bias, stride, padding)`` in sub-pixel form; same FLOPs.

    Along an x2 axis (kernel 4, stride 2, padding 1) output ``o`` gets input ``i`` through tap
    ``k = o + 1 - 2i``; writing ``k = 2b + r`` splits the kernel into two 2-tap kernels, one per
    output phase ``r``. So the whole layer is a stride-1 transposed convolution with 2-tap kernels
    along those axes to 2^n times the channels (one set per phase combination), followed by
    depth-to-space and a one-pixel crop of each x2 axis. Other axes (stride 1) are left as they are.
    """
    axes = subpixel_axes(weight.shape[2:], stride, padding)
    c_in, c_out = weight.shape[:2]
    n_sub = sum(axes)
    # weight [in, out, k...]: split each x2 axis's 4 taps into (2 taps, 2 phases) and move the
    # phases next to the output channels -> [in, out * 2^n_sub, taps...]
    split, taps, phases, kernel = [c_in, c_out], [], [], []
    for k, sub in zip(weight.shape[2:], axes, strict=True):
        taps.append(len(split))
        if sub:
            phases.append(len(split) + 1)
        split += [2, 2] if sub else [k]
        kernel.append(2 if sub else k)
    weight = weight.reshape(split).permute(0, 1, *phases, *taps).reshape(c_in, c_out << n_sub, *kernel)
    bias = None if bias is None else bias.repeat_interleave(1 << n_sub)
    pad = [0 if sub else p for p, sub in zip(padding, axes, strict=True)]
    y = F.conv_transpose3d(x, weight, bias, 1, pad)  # [n, out * phases, sizes...]: x2 axes 1 longer
    n, sizes = y.shape[0], y.shape[2:]
    # depth-to-space: [n, out, phases..., sizes...] with each phase axis moved right after its axis
    order, phase = [0, 1], 2
    for a, sub in enumerate(axes):
        order.append(2 + n_sub + a)
        if sub:
            order.append(phase)
            phase += 1
    out = y.view(n, c_out, *[2] * n_sub, *sizes).permute(order)
    out = out.reshape(n, c_out, *[2 * d if sub else d for d, sub in zip(sizes, axes, strict=True)])
    return out[(slice(None), slice(None), *(slice(1, -1) if sub else slice(None) for sub in axes))]


def _autocast_operands(x, weight, bias):
    """Cast like autocast would for a convolution (custom Functions must do it themselves), and
    remember the original dtypes, which the gradients go back to."""
    dtypes = (x.dtype, weight.dtype, None if bias is None else bias.dtype)
    device = x.device.type
    if torch.is_autocast_enabled(device):
        dtype = torch.get_autocast_dtype(device)
        x, weight = x.to(dtype), weight.to(dtype)
        bias = None if bias is None else bias.to(dtype)
    return x, weight, bias, dtypes


def _cast_back(grads, dtypes):
    return tuple(None if g is None else g.to(d) for g, d in zip(grads, dtypes, strict=True))


class _RGBSideConv3d(torch.autograd.Function):
    """A 3D convolution (or transposed convolution) between a thin RGB-side tensor and a wide one
    that computes every thin-side result in sub-pixel form, and everything else directly.

    conv (thin -> wide):             forward direct; input gradient sub-pixel.
    transposed (wide -> thin):       forward sub-pixel; input gradient a direct conv3d.
    The weight gradient is always a direct convolution-backward, the bias gradient a sum. Built from
    differentiable ops, so it is twice differentiable (the R1/R2 penalties).
    """

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, transposed):
        x, weight, bias, dtypes = _autocast_operands(x, weight, bias)
        with torch.autocast(x.device.type, enabled=False):
            if transposed:
                out = conv_transpose3d_subpixel(x, weight, bias, stride, padding)
            else:
                out = F.conv3d(x, weight, bias, stride, padding)
        ctx.save_for_backward(x, weight)
        ctx.conf = stride, padding, transposed, dtypes
        return out

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        stride, padding, transposed, dtypes = ctx.conf
        grad = grad.to(x.dtype)
        grad_x = grad_w = grad_b = None
        with torch.autocast(grad.device.type, enabled=False):
            if ctx.needs_input_grad[0]:
                grad_x = (F.conv3d(grad, weight, None, stride, padding) if transposed else
                          conv_transpose3d_subpixel(grad, weight, None, stride, padding))
            if ctx.needs_input_grad[1]:
                # a transposed conv's weight gradient is the conv's, with input and output swapped
                wide, thin = (x, grad) if transposed else (grad, x)
                grad_w = torch.ops.aten.convolution_backward(
                    wide, thin, weight, None, stride, padding, [1, 1, 1], False, [0, 0, 0], 1,
                    [False, True, False])[1]
            if ctx.needs_input_grad[2]:
                grad_b = grad.sum((0, 2, 3, 4))
        return *_cast_back((grad_x, grad_w, grad_b), dtypes), None, None, None


class _ConvTranspose3dSummedBias(torch.autograd.Function):
    """``F.conv_transpose3d`` whose bias gradient is a plain sum of the output gradient.

    oneDNN's transposed-convolution backward is slow at the bias gradient: G's 32 -> 16 channel
    layer to 16x16x32x32 (batch 16, bf16, channels_last_3d) took 18.9 ms with it and 11.5 ms
    without; the sum costs 0.2 ms. Input and weight gradients come from the native backward.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding):
        x, weight, bias, dtypes = _autocast_operands(x, weight, bias)
        with torch.autocast(x.device.type, enabled=False):
            out = F.conv_transpose3d(x, weight, bias, stride, padding)
        ctx.save_for_backward(x, weight)
        ctx.conf = stride, padding, dtypes
        return out

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        stride, padding, dtypes = ctx.conf
        grad = grad.to(x.dtype)
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        grad_x = grad_w = grad_b = None
        with torch.autocast(grad.device.type, enabled=False):
            if need_x or need_w:
                grad_x, grad_w, _ = torch.ops.aten.convolution_backward(
                    grad, x, weight, None, stride, padding, [1, 1, 1], True, [0, 0, 0], 1,
                    [need_x, need_w, False])
            if need_b:
                grad_b = grad.sum((0, 2, 3, 4))
        return *_cast_back((grad_x, grad_w, grad_b), dtypes), None, None


def _own_kernels(conv: nn.Module, x: torch.Tensor) -> bool:
    """Whether ``conv`` may take the paths below for input ``x``: CPU tensors (measured with
    oneDNN; cuDNN has its own kernels) and a plain layer (zero padding, no groups or dilation)."""
    return (x.device.type == "cpu" and conv.groups == 1 and conv.padding_mode == "zeros"
            and conv.dilation == (1, 1, 1) and not isinstance(conv.padding, str)
            and getattr(conv, "output_padding", (0, 0, 0)) == (0, 0, 0))


def _rgb_side(conv: nn.Module, thin_channels: int) -> bool:
    """A thin side and only x2 (kernel 4, padding 1) or stride-1 axes: the sub-pixel path."""
    return (thin_channels <= THIN_CHANNELS
            and subpixel_axes(conv.kernel_size, conv.stride, conv.padding) is not None)


class Conv3d(nn.Conv3d):
    """``nn.Conv3d`` that zero-pads a short time axis itself, and takes the RGB-side path when it
    reads few channels (a discriminator's first layer). Same parameters, state dict and result.

    The time padding works around torch 2.13's CPU bf16 Conv3d backward, which returns NaN weight
    gradients (randomly, in a few percent of calls; at 16x64x64 in about 40 % of D steps) when the
    kernel overhangs a time axis shorter than itself, e.g. 3 taps with padding 1 over 2 frames. With
    that padding done by ``F.pad`` it never did (0 of 100 calls). Longer clips take the normal path:
    padding a full-resolution input costs a copy (8 % of a 16x64x64 step when it was done everywhere).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad_t = self.padding[0] if isinstance(self.padding, tuple) else 0
        if pad_t and self.padding_mode == "zeros" and x.shape[2] < self.kernel_size[0]:
            x = F.pad(x, (0, 0, 0, 0, pad_t, pad_t))
            return F.conv3d(x, self.weight, self.bias, self.stride, (0,) + tuple(self.padding[1:]),
                            self.dilation, self.groups)
        if x.requires_grad and _own_kernels(self, x) and _rgb_side(self, self.in_channels):
            return _RGBSideConv3d.apply(x, self.weight, self.bias, self.stride, self.padding, False)
        return super().forward(x)


class ConvTranspose3d(nn.ConvTranspose3d):
    """``nn.ConvTranspose3d`` that takes the RGB-side path when it writes few channels (the RGB
    output layer of the plain generators) and otherwise sums its bias gradient itself (see
    ``_ConvTranspose3dSummedBias``). Same parameters, state dict, FLOPs and result.

    From 16 output channels up the direct kernels are the faster ones (sub-pixel form measured
    1.4-6x slower there), so only narrow layers take the sub-pixel path.
    """

    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        if output_size is not None or not _own_kernels(self, x):
            return super().forward(x, output_size)
        if _rgb_side(self, self.out_channels):
            return _RGBSideConv3d.apply(x, self.weight, self.bias, self.stride, self.padding, True)
        return _ConvTranspose3dSummedBias.apply(x, self.weight, self.bias, self.stride, self.padding)
