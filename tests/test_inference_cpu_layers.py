"""The CPU layer swaps give the original layers' results and leave the original network untouched."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from napari_vesuvius.core.inference._cpu_layers import (
    ChannelsLastInstanceNorm3d,
    OneDnnConv3d,
    PointwiseConv3d,
    SingleChannelConv3d,
    StrideTransposeConv3d,
)
from napari_vesuvius.core.inference._cpu_network import accelerate_for_cpu
from napari_vesuvius.core.inference.unet import build_unet, preset

CL = torch.channels_last_3d


@pytest.mark.parametrize("kernel", [(2, 2, 2), (1, 2, 2), (2, 1, 3)])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("channels_last", [False, True])
def test_stride_transpose_equals_conv_transpose(
    kernel: tuple[int, int, int], bias: bool, channels_last: bool
) -> None:
    torch.manual_seed(0)
    original = nn.ConvTranspose3d(6, 3, kernel, stride=kernel, bias=bias)
    assert StrideTransposeConv3d.supports(original)
    x = torch.randn(2, 6, 5, 4, 7)
    with torch.inference_mode():
        out = StrideTransposeConv3d(original, channels_last)(x)
        torch.testing.assert_close(out, original(x), rtol=1e-5, atol=1e-5)
    assert out.is_contiguous(memory_format=CL) == channels_last


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("offset", [0.0, 1e4])
def test_channels_last_instance_norm_equals_instance_norm(affine: bool, offset: float) -> None:
    """Also where the mean dwarfs the spread (offset 1e4): the two-pass variance takes over."""
    torch.manual_seed(3)
    original = nn.InstanceNorm3d(5, affine=affine)
    if affine:
        nn.init.normal_(original.weight)
        nn.init.normal_(original.bias)
    x = torch.randn(2, 5, 6, 7, 8) * torch.linspace(0.5, 3, 5).view(1, 5, 1, 1, 1) + offset
    with torch.inference_mode():
        expected = original(x)
        out = ChannelsLastInstanceNorm3d(original, channels_last=True)(x)
        # at 1e4 float32 resolves 1e-3 of the input, so both norms are only that exact there
        tolerance = 1e-4 if offset == 0 else 4e-3
        torch.testing.assert_close(out, expected, rtol=tolerance, atol=tolerance)
        assert out.is_contiguous(memory_format=CL)
        torch.testing.assert_close(ChannelsLastInstanceNorm3d(original)(x), expected)


def test_overlapping_transpose_and_strided_convs_are_not_swapped() -> None:
    assert not StrideTransposeConv3d.supports(nn.ConvTranspose3d(4, 4, 3, stride=2))
    assert not PointwiseConv3d.supports(nn.Conv3d(4, 4, 1, stride=2))
    assert not PointwiseConv3d.supports(nn.Conv3d(4, 4, 1, groups=2))
    assert not SingleChannelConv3d.supports(nn.Conv3d(2, 4, 3, padding=1))


@pytest.mark.parametrize("bias", [True, False])
def test_pointwise_and_single_channel_equal_conv3d(bias: bool) -> None:
    torch.manual_seed(1)
    head = nn.Conv3d(8, 2, 1, bias=bias)
    stem = nn.Conv3d(1, 4, 3, stride=(1, 2, 2), padding=1, bias=bias)
    x8, x1 = torch.randn(1, 8, 6, 9, 5), torch.randn(3, 1, 7, 8, 9)
    with torch.inference_mode():
        for channels_last in (False, True):
            fast_head, fast_stem = (
                PointwiseConv3d(head, channels_last),
                SingleChannelConv3d(stem, channels_last),
            )
            torch.testing.assert_close(fast_head(x8), head(x8), rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(fast_stem(x1), stem(x1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("channels_last", [False, True])
def test_a_single_small_tile_is_convolved_by_onednn_not_the_reference_kernel(channels_last: bool) -> None:
    """PyTorch sends one 16³ tile with 8 channels to ``slow_conv3d``; the swap runs it in oneDNN."""
    from torch.profiler import ProfilerActivity, profile

    torch.manual_seed(4)
    conv = nn.Conv3d(8, 8, 3, stride=(1, 2, 2), padding=1)
    assert OneDnnConv3d.supports(conv) and not OneDnnConv3d.supports(nn.Conv3d(8, 8, 3, padding="same"))
    assert not OneDnnConv3d.supports(nn.Conv3d(8, 8, 3, padding=1, padding_mode="reflect"))
    fast = OneDnnConv3d(conv, channels_last)
    x = torch.randn(1, 8, 16, 16, 16)

    def kernels(module: nn.Module) -> set[str]:
        with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as prof:
            module(x)
        return {event.key for event in prof.key_averages()}

    assert "aten::slow_conv3d_forward" in kernels(conv)
    used = kernels(fast)
    # oneDNN's direct entry, or with weights reordered once (8·8·27 weights ≥ 16·8·8 output voxels)
    onednn = {"aten::mkldnn_convolution", "mkldnn::_convolution_pointwise"}
    assert used & onednn and "aten::slow_conv3d_forward" not in used
    with torch.inference_mode():
        torch.testing.assert_close(fast(x), conv(x), rtol=1e-5, atol=1e-5)
        with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast keeps F.conv3d's route
            assert fast(x).dtype == torch.bfloat16
        grouped = nn.Conv3d(8, 4, 3, padding=(0, 1, 2), dilation=(1, 2, 1), groups=2)
        torch.testing.assert_close(OneDnnConv3d(grouped, channels_last)(x), grouped(x), rtol=1e-5, atol=1e-5)


class SharedTwice(nn.Module):
    """One module reachable by two names (as dynamic-network-architectures' conv blocks are)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(1, 4, 3, padding=1)
        self.all_modules = nn.Sequential(self.conv, nn.LeakyReLU(), nn.Conv3d(4, 2, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.all_modules(x)


@pytest.mark.parametrize("make", [lambda: build_unet(preset("tiny")), SharedTwice])
@pytest.mark.parametrize("channels_last", [False, True])
def test_accelerated_network_matches_and_shares_parameters(make, channels_last: bool) -> None:
    torch.manual_seed(2)
    network = make().eval()
    keys = list(network.state_dict())
    fast = accelerate_for_cpu(network, channels_last=channels_last)
    swapped = StrideTransposeConv3d | PointwiseConv3d | SingleChannelConv3d
    assert any(isinstance(m, swapped) for m in fast.modules())
    assert not any(isinstance(m, SingleChannelConv3d) for m in network.modules())
    assert list(network.state_dict()) == keys
    original_params = {id(p) for p in network.parameters()}
    assert {id(p) for p in fast.parameters()} <= original_params
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.inference_mode():
        torch.testing.assert_close(fast(x), network(x), rtol=1e-4, atol=1e-4)


class ReusesConvOutput(nn.Module):
    """A conv output read twice (by a norm and by the sum), and one norm reached from two places."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(2, 4, 3, padding=1)
        self.norm = nn.InstanceNorm3d(4, affine=True)
        self.block = nn.Sequential(nn.Conv3d(2, 4, 3, padding=1), nn.InstanceNorm3d(4, affine=True))
        self.shared = nn.Sequential(nn.Conv3d(4, 4, 3, padding=1), self.norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.norm(y) + y + self.block(x) + self.shared(y)


def test_norm_works_in_place_only_on_a_fresh_conv_output() -> None:
    torch.manual_seed(3)
    network = ReusesConvOutput().eval()
    with torch.no_grad():
        for module in network.modules():
            if isinstance(module, nn.InstanceNorm3d):
                module.weight.uniform_(0.5, 2.0)
                module.bias.uniform_(-1.0, 1.0)
    fast = accelerate_for_cpu(network).network
    assert fast.block[1].inplace  # directly after a conv inside a Sequential
    assert not fast.norm.inplace  # also called on a tensor the sum reads again
    assert fast.shared[1] is fast.norm
    x = torch.randn(1, 2, 16, 16, 16) + 3.0
    with torch.inference_mode():
        torch.testing.assert_close(accelerate_for_cpu(network)(x), network(x), rtol=1e-4, atol=1e-4)
    unet = accelerate_for_cpu(build_unet(preset("tiny"))).network
    norms = [m for m in unet.modules() if isinstance(m, ChannelsLastInstanceNorm3d)]
    assert any(m.inplace for m in norms) and not all(m.inplace for m in norms)


class ReadsTwice(nn.Sequential):
    """A Sequential whose own forward reads the conv output again after the norm."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self[0](x)
        return self[1](y) + y


def test_sequential_with_its_own_forward_keeps_the_norm_out_of_place() -> None:
    torch.manual_seed(4)
    network = ReadsTwice(nn.Conv3d(2, 4, 3, padding=1), nn.InstanceNorm3d(4, affine=True)).eval()
    fast = accelerate_for_cpu(network)
    assert not fast.network[1].inplace
    x = torch.randn(1, 2, 16, 16, 16) + 3.0
    with torch.inference_mode():
        torch.testing.assert_close(fast(x), network(x), rtol=1e-4, atol=1e-4)
