"""The 3D convolutions the models are built from: ``nn.Conv3d``/``nn.ConvTranspose3d`` with the same
parameters and state dicts, that route a few shapes around slow CPU kernels (torch 2.13, oneDNN).

- ``Conv3d`` pads a time axis shorter than its kernel itself (a bf16 NaN-gradient workaround).
- Layers with an RGB side (≤ 4 channels) compute the thin side's results in sub-pixel form, in the
  input's memory format.
- ``ConvTranspose3d`` sums its bias gradient itself, and can end in a tanh (a generator's output),
  which its RGB-side path fuses into the convolution.
- Their backward computes only the gradients the running backward will use (``_wanted``).
Under torch.compile all of them take torch's own path. Every figure quoted here was measured at batch 16 with 2 threads on the development CPU.
"""

from __future__ import annotations

import itertools

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
                              stride, padding, tanh: bool = False) -> torch.Tensor:
    """``F.conv_transpose3d(x, weight, bias, stride, padding)`` in sub-pixel form; same FLOPs.
    With ``tanh`` the result goes through tanh (see ``_conv_transpose3d_tanh``).

    Along an x2 axis (kernel 4, stride 2, padding 1) output ``o`` gets input ``i`` through tap
    ``k = o + 1 - 2i``; writing ``k = 2b + r`` splits the kernel into two 2-tap kernels, one per
    output phase ``r``. So the whole layer is a stride-1 transposed convolution with 2-tap kernels
    along those axes to 2^n times the channels (one set per phase combination), followed by
    depth-to-space and a one-pixel crop of each x2 axis (``_DepthToSpace``). Other axes (stride 1)
    are left as they are. The result is contiguous in the memory format of ``x``.
    """
    axes = subpixel_axes(weight.shape[2:], stride, padding)
    c_in, c_out = weight.shape[:2]
    n_sub = sum(axes)
    # weight [in, out, k...]: split each x2 axis's 4 taps into (2 taps, 2 phases), phases first ->
    # [in, 2^n_sub * out, taps...], channel = phase * out + c (phase bits in axis order)
    split, taps, phases, kernel = [c_in, c_out], [], [], []
    for k, sub in zip(weight.shape[2:], axes, strict=True):
        taps.append(len(split))
        if sub:
            phases.append(len(split) + 1)
        split += [2, 2] if sub else [k]
        kernel.append(2 if sub else k)
    weight = weight.reshape(split).permute(0, *phases, 1, *taps).reshape(c_in, c_out << n_sub, *kernel)
    bias = None if bias is None else bias.repeat(1 << n_sub)
    pad = [0 if sub else p for p, sub in zip(padding, axes, strict=True)]
    # [n, phases * out, sizes...]: x2 axes 1 longer
    y = _conv_transpose3d_tanh(x, weight, bias, pad) if tanh else F.conv_transpose3d(x, weight, bias, 1, pad)
    return _DepthToSpace.apply(y, c_out, tuple(axes))


def _conv_transpose3d_tanh(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                           padding) -> torch.Tensor:
    """``tanh(F.conv_transpose3d(x, weight, bias, 1, padding))``, with the tanh applied by oneDNN to
    the convolution's accumulators (a post-op of torch's mkldnn pointwise kernel, which inductor's
    CPU fusions use) instead of by a pass of its own: torch's CPU tanh is slow (bf16 [16, 3, 16, 64,
    64]: 2.7 ms), and G's RGB layer + tanh took 11.1 -> 9.7 ms (median of 60 interleaved calls).
    Channels-last inputs only: on NCDHW the kernel reorders to and from oneDNN's blocked layout, and
    took 163 ms where the two ops take 38 (fp32). Not differentiable by itself; other dtypes than
    fp32/bf16 (oneDNN's) and builds without that kernel take the two-op path too."""
    if FUSED_CONV_TRANSPOSE is None or x.dtype not in (torch.float32, torch.bfloat16) or \
            _format(x) is not torch.channels_last_3d:
        return torch.tanh(F.conv_transpose3d(x, weight, bias, 1, padding))
    dims = x.dim() - 2
    return FUSED_CONV_TRANSPOSE(x, weight, bias, list(padding), [0] * dims, [1] * dims, [1] * dims, 1,
                                "tanh", [], "")


def _find_fused_conv_transpose():
    if not torch.backends.mkldnn.is_available():
        return None
    try:
        return torch.ops.mkldnn._convolution_transpose_pointwise
    except (AttributeError, RuntimeError):
        return None


FUSED_CONV_TRANSPOSE = _find_fused_conv_transpose()  # None where this build lacks it


def _count_fused_flops() -> None:
    """Teach torch's FLOP counter (``FlopCounterMode``, the benchmarks) the fused kernel: it knows the
    aten convolutions only, and would count G's output layer as no work at all."""
    from torch.utils.flop_counter import conv_flop_count, flop_registry, register_flop_formula
    if FUSED_CONV_TRANSPOSE is None or FUSED_CONV_TRANSPOSE in flop_registry:
        return

    @register_flop_formula(FUSED_CONV_TRANSPOSE)
    def fused_conv_transpose_flop(x_shape, w_shape, *args, out_shape=None, **kwargs) -> int:
        return conv_flop_count(x_shape, w_shape, out_shape, transposed=True)


_count_fused_flops()


# Depth-to-space with a one-pixel crop
#
# Phase-major channels ``phase * c + k`` of ``y`` [n, 2^n_sub * c, sizes...] go to
# ``out`` [n, c, sizes...] with each x2 axis doubled and cropped: output ``o = 2a + b`` of such an
# axis comes from ``y`` position ``a + b`` in phase ``1 - b``. Both directions copy between matching
# views of ``y`` and ``out`` (``_pieces``), so the gradient of one is the other, and the results stay
# differentiable (the R1/R2 penalties differentiate D's input gradient again).
#
# In channels_last_3d with an x2 last axis the copies run over the contiguous (phase_w, c) pairs:
# G's RGB output (bf16, 16x3x16x64x64) takes 1.5 ms, where a permute + reshape took 2.3 ms and wrote
# NCDHW (whose consumers, D's first layer and G's RGB-layer backward, were 1-1.5 ms slower each).


def _format(t: torch.Tensor) -> torch.memory_format:
    cl = t.dim() == 5 and t.is_contiguous(memory_format=torch.channels_last_3d) and not t.is_contiguous()
    return torch.channels_last_3d if cl else torch.contiguous_format


def _pieces(y: torch.Tensor, out: torch.Tensor, c: int, axes: tuple[bool, ...]):
    """Pairs of views (of ``y``, of ``out``) that depth-to-space copies one onto the other."""
    sizes = y.shape[2:]
    bits = sum(axes)
    phase_stride, bit = [], bits
    for sub in axes:  # channel stride of each x2 axis's phase
        bit -= sub
        phase_stride.append(c << bit if sub else 0)
    if axes[-1] and _format(y) is _format(out) is torch.channels_last_3d:
        yield from _channels_last_pieces(y, out, c, axes, phase_stride)
        return
    for bs in itertools.product((0, 1), repeat=bits):
        b = iter(bs)
        src, dst, phase = [slice(None)], [slice(None), slice(None)], 0
        for size, sub, ps in zip(sizes, axes, phase_stride, strict=True):
            if sub:
                shift = next(b)
                src.append(slice(shift, shift + size - 1))
                dst.append(slice(shift, None, 2))
                phase += (1 - shift) * ps
            else:
                src.append(slice(None))
                dst.append(slice(None))
        src.insert(1, slice(phase, phase + c))
        yield y[tuple(src)], out[tuple(dst)]


def _channels_last_pieces(y, out, c, axes, phase_stride):
    """Three as_strided view pairs: the interior of the last axis in runs of (phase_w, c) = 2c
    contiguous elements, and its two edge pixels; leading x2 axes map (a, b) -> position a + b,
    phase 1 - b, which is affine in (a, b)."""
    ys, os_ = y.stride(), out.stride()
    size, ystride, ostride = [y.shape[0]], [ys[0]], [os_[0]]
    y_off, o_off = y.storage_offset(), out.storage_offset()
    for d, sub in enumerate(axes[:-1]):
        length, sy, so = y.shape[2 + d], ys[2 + d], os_[2 + d]
        if sub:  # b = 0: position a, phase 1; b = 1: position a + 1, phase 0
            size += [length - 1, 2]
            ystride += [sy, sy - phase_stride[d]]
            ostride += [2 * so, so]
            y_off += phase_stride[d]
        else:
            size.append(length)
            ystride.append(sy)
            ostride.append(so)
    w, sy, so = y.shape[-1] - 1, ys[-1], os_[-1]  # input length along the last axis
    # interior: y positions 1..w-1, both phases -> out 1..2w-2; edges: phase 1 of position 0 -> out 0,
    # phase 0 of position w -> out 2w-1
    for count, run, y_at, o_at in ((w - 1, 2 * c, sy, so), (1, c, c, 0), (1, c, w * sy, (2 * w - 1) * so)):
        yield (y.as_strided(size + [count, run], ystride + [sy, 1], y_off + y_at),
               out.as_strided(size + [count, run], ostride + [2 * so, 1], o_off + o_at))


def _empty(shape, like: torch.Tensor, fmt: torch.memory_format) -> torch.Tensor:
    return torch.empty(shape, dtype=like.dtype, device=like.device, memory_format=fmt)


class _DepthToSpace(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y, c, axes):
        sizes = [2 * (s - 1) if sub else s for s, sub in zip(y.shape[2:], axes, strict=True)]
        out = _empty([y.shape[0], c, *sizes], y, _format(y))
        for src, dst in _pieces(y, out, c, axes):
            dst.copy_(src)
        ctx.conf = y.shape, c, axes
        return out

    @staticmethod
    def backward(ctx, grad):
        shape, c, axes = ctx.conf
        return _SpaceToDepth.apply(grad, shape, c, axes), None, None


class _SpaceToDepth(torch.autograd.Function):
    """The adjoint of ``_DepthToSpace``: zeros where the crop dropped values."""

    @staticmethod
    def forward(ctx, out, shape, c, axes):
        y = _empty(shape, out, _format(out))
        for src, dst in _pieces(y, out, c, axes):
            src.copy_(dst)
        # what the crop dropped: phase 0 of the first position and phase 1 of the last, per x2 axis
        phased = y.unflatten(1, [2] * sum(axes) + [c])  # [n, phase bits..., c, sizes...]
        bit, spatial = 1, 2 + sum(axes)
        for d, sub in enumerate(axes):
            if sub:
                phased.select(bit, 0).select(spatial + d - 1, 0).zero_()
                phased.select(bit, 1).select(spatial + d - 1, -1).zero_()
                bit += 1
        ctx.conf = c, axes
        return y

    @staticmethod
    def backward(ctx, grad):
        c, axes = ctx.conf
        return _DepthToSpace.apply(grad, c, axes), None, None, None


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


def _wanted(ctx) -> tuple[bool, ...]:
    """Which inputs' gradients this backward call must produce: ``ctx.needs_input_grad``, narrowed to
    what the running backward will use. ``torch.autograd.grad(..., inputs=[x])`` (R1/R2) wants no
    weight gradients, and ``backward(inputs=weights)`` no input gradient; built-in ops skip those by
    themselves, a custom Function has to ask the engine (a private call; without it, everything)."""
    will_run = getattr(torch._C, "_will_engine_execute_node", None)
    edges = ctx.next_functions  # one per tensor input (the Functions here take those first)
    wanted = []
    for i, needed in enumerate(ctx.needs_input_grad):
        node = edges[i][0] if i < len(edges) else None
        if needed and node is not None and will_run is not None:
            try:
                needed = will_run(node)
            except RuntimeError:  # not inside a backward the engine knows about
                pass
        wanted.append(needed)
    return tuple(wanted)


def _cast_back(grads, dtypes):
    return tuple(None if g is None else g.to(d) for g, d in zip(grads, dtypes, strict=True))


class _RGBSideConv3d(torch.autograd.Function):
    """A 3D convolution (or transposed convolution) between a thin RGB-side tensor and a wide one
    that computes every thin-side result in sub-pixel form, and everything else directly.

    conv (thin -> wide):             forward direct; input gradient sub-pixel.
    transposed (wide -> thin):       forward sub-pixel; input gradient a direct conv3d.
    The weight gradient is always a direct convolution-backward, the bias gradient a sum. Built from
    differentiable ops, so it is twice differentiable (the R1/R2 penalties). ``tanh`` (transposed
    only) ends the forward in a tanh fused into the convolution.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, transposed, tanh=False):
        x, weight, bias, dtypes = _autocast_operands(x, weight, bias)
        with torch.autocast(x.device.type, enabled=False):
            if transposed:
                out = conv_transpose3d_subpixel(x, weight, bias, stride, padding, tanh)
            else:
                out = F.conv3d(x, weight, bias, stride, padding)
        ctx.save_for_backward(x, weight, out if tanh else None)
        ctx.conf = stride, padding, transposed, dtypes
        return out

    @staticmethod
    def backward(ctx, grad):
        x, weight, tanh_out = ctx.saved_tensors
        stride, padding, transposed, dtypes = ctx.conf
        grad = grad.to(x.dtype)
        if tanh_out is not None:
            grad = torch.ops.aten.tanh_backward(grad, tanh_out)  # grad * (1 - out^2)
        need_x, need_w, need_b = _wanted(ctx)[:3]
        grad_x = grad_w = grad_b = None
        with torch.autocast(grad.device.type, enabled=False):
            if need_x:
                grad_x = (F.conv3d(grad, weight, None, stride, padding) if transposed else
                          conv_transpose3d_subpixel(grad, weight, None, stride, padding))
            if need_w:
                # a transposed conv's weight gradient is the conv's, with input and output swapped
                wide, thin = (x, grad) if transposed else (grad, x)
                grad_w = torch.ops.aten.convolution_backward(
                    wide, thin, weight, None, stride, padding, [1, 1, 1], False, [0, 0, 0], 1,
                    [False, True, False])[1]
            if need_b:
                grad_b = grad.sum((0, 2, 3, 4))
        return *_cast_back((grad_x, grad_w, grad_b), dtypes), None, None, None, None


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
        need_x, need_w, need_b = _wanted(ctx)[:3]
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
    oneDNN; cuDNN has its own kernels), eager mode (under torch.compile the compiler picks the
    kernels, and dynamo lost the surrounding autocast after these Functions' own autocast-off
    regions) and a plain layer (zero padding, no groups or dilation)."""
    return (x.device.type == "cpu" and not torch.compiler.is_compiling()
            and conv.groups == 1 and conv.padding_mode == "zeros"
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

    ``tanh=True`` returns ``torch.tanh`` of the result: on the RGB-side path fused into the
    convolution (a generator's output layer), otherwise as its own op.
    """

    def forward(self, x: torch.Tensor, output_size: list[int] | None = None, *,
                tanh: bool = False) -> torch.Tensor:
        if output_size is not None or not _own_kernels(self, x):
            out = super().forward(x, output_size)
        elif _rgb_side(self, self.out_channels):
            return _RGBSideConv3d.apply(x, self.weight, self.bias, self.stride, self.padding, True, tanh)
        else:
            out = _ConvTranspose3dSummedBias.apply(x, self.weight, self.bias, self.stride, self.padding)
        return torch.tanh(out) if tanh else out
