"""models/conv.py: the convolutions that route around slow CPU kernels equal torch's, forward,
backward and FLOP count; which layers take which path."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from vidgan_cli.models import conv
from vidgan_cli.models.blocks import to_channels_last_3d
from vidgan_cli.models.conv import Conv3d, ConvTranspose3d

# --------------------------------------------------------------------------------------------------
# the Conv3d that pads time itself


@pytest.mark.parametrize("kernel, stride, padding", [((3, 4, 4), (1, 2, 2), 1), (3, 1, 1), (4, 2, 1),
                                                     (1, 1, 0)])
@pytest.mark.parametrize("frames", [2, 8])  # a time axis shorter than the kernel is padded by F.pad
def test_time_padded_conv3d_equals_torch_conv3d(kernel, stride, padding, frames):
    torch.manual_seed(0)
    ours = Conv3d(5, 6, kernel, stride, padding)
    ref = torch.nn.Conv3d(5, 6, kernel, stride, padding)
    ref.load_state_dict(ours.state_dict())  # same keys and shapes: checkpoints load either way
    x = torch.randn(2, 5, frames, 8, 8, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)
    out, out_ref = ours(x), ref(x_ref)
    torch.testing.assert_close(out, out_ref)
    out.square().sum().backward()
    out_ref.square().sum().backward()
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad)
    torch.testing.assert_close(x.grad, x_ref.grad)


def test_time_padded_conv3d_has_finite_bf16_weight_gradients_on_two_frames():
    """torch 2.13's CPU bf16 backward of nn.Conv3d here gave NaN weight gradients in ~6 % of calls."""
    torch.manual_seed(0)
    conv = Conv3d(64, 128, (3, 4, 4), (1, 2, 2), 1).to(memory_format=torch.channels_last_3d)
    for _ in range(60):
        x = torch.randn(32, 64, 2, 8, 8).contiguous(memory_format=torch.channels_last_3d)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = conv(x)
        conv.zero_grad()
        out.backward(torch.randn_like(out))
        assert torch.isfinite(conv.weight.grad).all()


# --------------------------------------------------------------------------------------------------
# convolutions with an RGB side (sub-pixel form where oneDNN is slow)


@pytest.mark.parametrize("kernel, stride, padding", [
    ((3, 4, 4), (1, 2, 2), (1, 1, 1)),   # G's RGB layer: x2 in space
    ((4, 4, 4), (2, 2, 2), (1, 1, 1)),   # D's first layer: x2 in time too
    ((1, 4, 4), (1, 2, 2), (0, 1, 1)),
    ((4, 3, 4), (2, 1, 2), (1, 1, 1)),
])
def test_subpixel_transposed_conv_equals_conv_transpose3d(kernel, stride, padding):
    torch.manual_seed(0)
    x = torch.randn(2, 5, 3, 4, 5, dtype=torch.float64)
    w, b = torch.randn(5, 3, *kernel, dtype=torch.float64), torch.randn(3, dtype=torch.float64)
    torch.testing.assert_close(conv.conv_transpose3d_subpixel(x, w, b, stride, padding),
                               F.conv_transpose3d(x, w, b, stride, padding))


@pytest.mark.parametrize("axes", [(False, True, True), (True, True, True), (True, False, True),
                                  (False, False, True), (True, True, False)])
def test_depth_to_space_in_either_memory_format_and_its_gradient_equal_the_reference(axes):
    """The channels-last copies (x2 last axis) and the generic slices give the reference's result, in
    the input's memory format; space-to-depth gives its gradient (zeros where the crop dropped)."""
    torch.manual_seed(0)
    c = 3
    y = torch.randn(2, c << sum(axes), 3, 4, 5, dtype=torch.float64)
    y_cl = y.contiguous(memory_format=torch.channels_last_3d)
    out, out_cl = conv._DepthToSpace.apply(y, c, axes), conv._DepthToSpace.apply(y_cl, c, axes)
    assert out.shape == (2, c, *(2 * (s - 1) if sub else s for s, sub in zip((3, 4, 5), axes, strict=True)))
    assert out.is_contiguous() and out_cl.is_contiguous(memory_format=torch.channels_last_3d)
    torch.testing.assert_close(out_cl, out, rtol=0, atol=0)
    torch.testing.assert_close(out, reference_depth_to_space(y, c, axes), rtol=0, atol=0)
    g = torch.randn_like(out)
    y.requires_grad_(True)
    (expected,) = torch.autograd.grad(reference_depth_to_space(y, c, axes), y, g)  # 0 where cropped
    for fmt in (torch.contiguous_format, torch.channels_last_3d):
        back = conv._SpaceToDepth.apply(g.contiguous(memory_format=fmt), y.shape, c, axes)
        assert back.is_contiguous(memory_format=fmt)
        torch.testing.assert_close(back, expected, rtol=0, atol=0)


def reference_depth_to_space(y, c, axes):
    """Phase-major channels to space by permute + reshape, then the one-pixel crop."""
    k, sizes = sum(axes), y.shape[2:]
    order, phase = [0, 1 + k], 1
    for d, sub in enumerate(axes):
        order.append(2 + k + d)
        if sub:
            order.append(phase)
            phase += 1
    out = y.reshape(y.shape[0], *[2] * k, c, *sizes).permute(order)
    out = out.reshape(y.shape[0], c, *(2 * s if sub else s for s, sub in zip(sizes, axes, strict=True)))
    return out[(slice(None), slice(None), *(slice(1, -1) if sub else slice(None) for sub in axes))]


def test_channels_last_depth_to_space_is_twice_differentiable():
    torch.manual_seed(0)
    y = torch.randn(1, 12, 2, 3, 3, dtype=torch.float64).contiguous(memory_format=torch.channels_last_3d)

    def d2s(y):
        out = conv._DepthToSpace.apply(y, 3, (False, True, True))
        assert out.is_contiguous(memory_format=torch.channels_last_3d)  # the as_strided copies
        return out
    y.requires_grad_(True)
    assert torch.autograd.gradcheck(d2s, [y])
    assert torch.autograd.gradgradcheck(d2s, [y])


@pytest.mark.parametrize("transposed", [False, True])
def test_rgb_side_conv_is_twice_differentiable(transposed):
    """gradcheck and gradgradcheck: the R1/R2 penalties differentiate D's input gradient again."""
    torch.manual_seed(0)
    if transposed:  # wide (4 channels) -> thin (2)
        x, w = torch.randn(1, 4, 2, 3, 3), torch.randn(4, 2, 3, 4, 4)
    else:           # thin (2) -> wide (4)
        x, w = torch.randn(1, 2, 4, 6, 6), torch.randn(4, 2, 3, 4, 4)
    inputs = [t.double().requires_grad_(True) for t in (x, w, torch.randn(w.shape[1 if transposed else 0]))]

    def rgb_side(x, w, b):
        return conv._RGBSideConv3d.apply(x, w, b, (1, 2, 2), (1, 1, 1), transposed)
    assert torch.autograd.gradcheck(rgb_side, inputs)
    assert torch.autograd.gradgradcheck(rgb_side, inputs)


class CountOps(TorchDispatchMode):
    """Records the name of every aten op that runs; ``convolutions`` the convolution ones."""

    def __init__(self):
        super().__init__()
        self.names = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(func.__name__.split(".")[0])
        return func(*args, **(kwargs or {}))

    @property
    def convolutions(self) -> list[str]:
        return [n for n in self.names if n in ("convolution", "convolution_backward")]


@pytest.mark.parametrize("transposed", [False, True])
def test_rgb_side_backward_computes_only_the_gradients_the_engine_will_use(transposed):
    """R1/R2 ask autograd.grad for the input gradient only, the D step's backward(inputs=weights) for
    the weight gradients only: the other (a full-size convolution each) is not computed."""
    torch.manual_seed(0)
    ours, _, x = rgb_side_pair(transposed)
    x.requires_grad_(True)
    expected = {}
    with CountOps() as everything:
        out = ours(x)
        expected["x"], expected["w"] = torch.autograd.grad(out.square().sum(), [x, ours.weight])
    forward_calls = 1
    assert len(everything.convolutions) == forward_calls + 2
    for wanted in ("x", "w"):
        with CountOps() as count:
            out = ours(x)
            inputs = [x] if wanted == "x" else [ours.weight]
            (grad,) = torch.autograd.grad(out.square().sum(), inputs)
        assert len(count.convolutions) == forward_calls + 1, count.convolutions
        torch.testing.assert_close(grad, expected[wanted])


def rgb_side_pair(transposed: bool, channels: int = 6):
    """(our module, torch's module with the same weights, an input) for a layer with an RGB side:
    G's RGB layer (transposed, wide -> 3 channels) or D's first layer (3 channels -> wide)."""
    args = (channels, 3, (3, 4, 4), (1, 2, 2), 1) if transposed else (3, channels, 4, 2, 1)
    ours = (ConvTranspose3d if transposed else Conv3d)(*args)
    ref = (nn.ConvTranspose3d if transposed else nn.Conv3d)(*args)
    ref.load_state_dict(ours.state_dict())  # same keys and shapes: checkpoints load either way
    x = torch.randn(2, channels, 3, 4, 5) if transposed else torch.randn(2, 3, 4, 8, 10)
    return ours, ref, x


@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("channels_last", [False, True])
def test_rgb_side_modules_equal_torch_modules(transposed, channels_last):
    torch.manual_seed(0)
    ours, ref, x = rgb_side_pair(transposed)
    if channels_last:
        to_channels_last_3d(ours)
        x = x.contiguous(memory_format=torch.channels_last_3d)
    x = x.requires_grad_(True)
    x_ref = x.detach().clone().requires_grad_(True)
    out, out_ref = ours(x), ref(x_ref)
    assert out.grad_fn.name() == "_RGBSideConv3dBackward"  # the path under test, not the fallback
    torch.testing.assert_close(out, out_ref)
    grad = torch.randn_like(out_ref)
    out.backward(grad)
    out_ref.backward(grad)
    for a, b in ((ours.weight.grad, ref.weight.grad), (ours.bias.grad, ref.bias.grad), (x.grad, x_ref.grad)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4)  # sums taken in another order


@pytest.mark.parametrize("transposed", [False, True])
def test_rgb_side_modules_cast_like_autocast(transposed):
    torch.manual_seed(0)
    ours, ref, x = rgb_side_pair(transposed, channels=16)
    x, x_ref = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, out_ref = ours(x), ref(x_ref)
    assert out.dtype == out_ref.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), out_ref.float(), rtol=0.02, atol=0.05)
    out.float().square().sum().backward()
    out_ref.float().square().sum().backward()
    assert x.grad.dtype == ours.weight.grad.dtype == ours.bias.grad.dtype == torch.float32
    for a, b in ((ours.weight.grad, ref.weight.grad), (x.grad, x_ref.grad)):
        assert (a - b).norm() / b.norm() < 0.02


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("bf16", [False, True])
def test_rgb_side_tanh_is_fused_and_equals_tanh_of_torchs_module(channels_last, bf16):
    """G's output layer: ``conv(x, tanh=True)`` computes the tanh inside the convolution (no tanh op
    of its own) in channels_last_3d, as its own op in NCDHW (the fused kernel is 4x slower there),
    with torch's values and gradients either way."""
    assert conv.FUSED_CONV_TRANSPOSE is not None  # torch's CPU builds have the mkldnn kernel
    torch.manual_seed(0)
    ours, ref, x = rgb_side_pair(True, channels=16)
    if channels_last:
        to_channels_last_3d(ours)
        to_channels_last_3d(ref)
        x = x.contiguous(memory_format=torch.channels_last_3d)
    x, x_ref = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        with CountOps() as ops:
            out = ours(x, tanh=True)
        out_ref = torch.tanh(ref(x_ref))
    fused = "_convolution_transpose_pointwise" in ops.names
    assert fused == channels_last and ("tanh" in ops.names) != channels_last, ops.names
    assert out.dtype == out_ref.dtype == (torch.bfloat16 if bf16 else torch.float32)
    assert out.is_contiguous(memory_format=torch.channels_last_3d if channels_last else torch.contiguous_format)
    tol = dict(rtol=0.02, atol=0.02) if bf16 else dict(rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.float(), out_ref.float(), **tol)
    assert out.abs().max() <= 1 and out.abs().max() > 0.5  # a tanh, and not of zeros
    grad = torch.randn(out_ref.shape)
    out.float().backward(grad)
    out_ref.float().backward(grad)
    for a, b in ((ours.weight.grad, ref.weight.grad), (ours.bias.grad, ref.bias.grad), (x.grad, x_ref.grad)):
        assert (a - b).norm() / b.norm() < (0.03 if bf16 else 1e-5)


def test_rgb_side_tanh_is_twice_differentiable():
    torch.manual_seed(0)
    x, w, b = torch.randn(1, 4, 2, 3, 3), torch.randn(4, 2, 3, 4, 4) / 4, torch.randn(2)
    inputs = [t.double().requires_grad_(True) for t in (x, w, b)]

    def rgb_side_tanh(x, w, b):
        return conv._RGBSideConv3d.apply(x, w, b, (1, 2, 2), (1, 1, 1), True, True)
    assert torch.autograd.gradcheck(rgb_side_tanh, inputs)
    assert torch.autograd.gradgradcheck(rgb_side_tanh, inputs)


def test_wide_path_applies_tanh_as_its_own_op():
    torch.manual_seed(0)
    wide = ConvTranspose3d(8, 6, 4, 2, 1)
    x = torch.randn(2, 8, 2, 3, 3)
    torch.testing.assert_close(wide(x, tanh=True), torch.tanh(F.conv_transpose3d(x, wide.weight, wide.bias, 2, 1)))


def test_only_thin_x2_layers_take_the_rgb_side_path():
    x3, x16 = torch.randn(1, 3, 4, 8, 8, requires_grad=True), torch.randn(1, 16, 4, 8, 8, requires_grad=True)
    assert Conv3d(3, 16, 4, 2, 1)(x3).grad_fn.name() == "_RGBSideConv3dBackward"
    assert Conv3d(3, 16, 3, 1, 1)(x3).grad_fn.name() != "_RGBSideConv3dBackward"       # no x2 axis
    assert Conv3d(16, 32, 4, 2, 1)(x16).grad_fn.name() != "_RGBSideConv3dBackward"     # wide input
    assert Conv3d(3, 16, 4, 2, 1)(x3.detach()).grad_fn.name() != "_RGBSideConv3dBackward"  # no input grad
    assert ConvTranspose3d(16, 3, (3, 4, 4), (1, 2, 2), 1)(x16).grad_fn.name() == "_RGBSideConv3dBackward"
    assert ConvTranspose3d(16, 8, (3, 4, 4), (1, 2, 2), 1)(x16).grad_fn.name() != "_RGBSideConv3dBackward"
    assert ConvTranspose3d(16, 3, 3, 2, 1)(x16).grad_fn.name() != "_RGBSideConv3dBackward"  # kernel 3
    on_meta = Conv3d(3, 16, 4, 2, 1, device="meta")(torch.empty(1, 3, 4, 8, 8, device="meta", requires_grad=True))
    assert on_meta.grad_fn.name() != "_RGBSideConv3dBackward"  # CPU only: measured with oneDNN


@pytest.mark.parametrize("transposed, tanh", [(False, False), (True, False), (True, True)])
def test_rgb_side_path_counts_the_same_flops(transposed, tanh):
    """The sub-pixel form is a re-indexing, not extra work: torch's FLOP count (forward and backward)
    does not change; the fused tanh kernel is counted as the convolution it is."""
    from torch.utils.flop_counter import FlopCounterMode
    ours, ref, x = rgb_side_pair(transposed)
    if tanh:  # the fused kernel runs on channels-last maps
        to_channels_last_3d(ours)
        x = x.contiguous(memory_format=torch.channels_last_3d)
    counts = []
    for module in (ours, ref):
        with FlopCounterMode(display=False) as counter, CountOps() as ops:
            args = (x.clone().requires_grad_(True),)
            out = module(*args, tanh=True) if tanh and module is ours else module(*args)
            out.sum().backward()
        counts.append(counter.get_total_flops())
        assert ("_convolution_transpose_pointwise" in ops.names) == (tanh and module is ours)
    # 2 * batch * wide channels * thin channels * kernel volume * (input positions of the transposed
    # layer, output positions of the conv)
    forward = 2 * 2 * 6 * 3 * (3 * 16 * (3 * 4 * 5) if transposed else 64 * (2 * 4 * 5))
    assert counts[0] == counts[1] == 3 * forward  # forward, input gradient, weight gradient


@pytest.mark.parametrize("kernel, stride", [((4, 4, 4), (2, 2, 2)), ((3, 4, 4), (1, 2, 2))])
@pytest.mark.parametrize("bias", [True, False])
def test_wide_conv_transpose3d_sums_its_bias_gradient_and_equals_torchs(kernel, stride, bias):
    torch.manual_seed(0)
    ours = ConvTranspose3d(6, 8, kernel, stride, 1, bias=bias)
    ref = nn.ConvTranspose3d(6, 8, kernel, stride, 1, bias=bias)
    ref.load_state_dict(ours.state_dict())
    to_channels_last_3d(ours)
    x = torch.randn(2, 6, 3, 4, 5).contiguous(memory_format=torch.channels_last_3d).requires_grad_(True)
    x_ref = x.detach().clone().requires_grad_(True)
    out, out_ref = ours(x), ref(x_ref)
    assert out.grad_fn.name() == "_ConvTranspose3dSummedBiasBackward"
    torch.testing.assert_close(out, out_ref)
    grad = torch.randn_like(out_ref)
    out.backward(grad)
    out_ref.backward(grad)
    pairs = [(ours.weight.grad, ref.weight.grad), (x.grad, x_ref.grad)]
    pairs += [(ours.bias.grad, ref.bias.grad)] if bias else []
    for a, b in pairs:
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = ours(x)
    assert out.dtype == torch.bfloat16
    ours.zero_grad()
    out.float().sum().backward()
    assert ours.weight.grad.dtype == torch.float32
    if bias:  # the bias gradient of a sum is the number of output positions per channel
        assert torch.equal(ours.bias.grad, torch.full((8,), float(out[0, 0].numel() * 2)))


def test_wide_conv_transpose3d_counts_the_same_flops():
    from torch.utils.flop_counter import FlopCounterMode
    counts = []
    for cls in (ConvTranspose3d, nn.ConvTranspose3d):
        torch.manual_seed(0)
        module = cls(6, 8, 4, 2, 1)
        with FlopCounterMode(display=False) as counter:
            module(torch.randn(2, 6, 3, 4, 5, requires_grad=True)).sum().backward()
        counts.append(counter.get_total_flops())
    assert counts[0] == counts[1] == 3 * 2 * 2 * 6 * 8 * 64 * (3 * 4 * 5)
