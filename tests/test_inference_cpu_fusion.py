"""The fused CPU path: numba kernels, fused norm/activation/residual, split decoder concat, packed weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from napari_vesuvius.core.inference import _cpu_kernels as kernels
from napari_vesuvius.core.inference._cpu_layers import (
    ChannelsLastAvgPool3d,
    ChannelsLastInstanceNorm3d,
    ConcatConv3d,
    OneDnnConv3d,
)
from napari_vesuvius.core.inference._cpu_network import (
    FusedResidualBlock,
    SplitConcatDecoder,
    accelerate_for_cpu,
    call_sites,
)

CL = torch.channels_last_3d


def channels_last(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=CL)


@pytest.mark.parametrize("threads", [1, 2])
def test_channel_moments_are_exact_also_when_the_mean_dwarfs_the_spread(threads: int) -> None:
    rng = np.random.default_rng(0)
    rows = (
        rng.normal(size=(300_000, 6)) * np.linspace(0.01, 3, 6) + np.array([0, 1, -5, 1e4, 3e5, 0])
    ).astype(np.float32)
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        mean, var = kernels.channel_moments(rows)
    finally:
        torch.set_num_threads(saved)
    exact = rows.astype(np.float64)
    np.testing.assert_allclose(mean, exact.mean(0), rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(var, exact.var(0), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("with_residual", [False, True])
def test_normalize_applies_scale_shift_residual_and_leaky_relu_in_place(
    threads: int, with_residual: bool
) -> None:
    rng = np.random.default_rng(1)
    rows = rng.normal(size=(200_000, 8)).astype(np.float32)
    residual = rng.normal(size=rows.shape).astype(np.float32) if with_residual else None
    scale, shift = rng.uniform(0.5, 2, 8), rng.normal(size=8)
    expected = rows * scale.astype(np.float32) + shift.astype(np.float32)
    if residual is not None:
        expected = expected + residual
    expected = np.where(expected >= 0, expected, expected * np.float32(0.01))
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        kernels.normalize_(rows, scale, shift, 0.01, residual)
    finally:
        torch.set_num_threads(saved)
    np.testing.assert_allclose(rows, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("shape", [(1, 5, 8, 8, 8), (2, 3, 9, 7, 6)])
def test_avg_pool_equals_pytorch_with_trailing_voxels_dropped(shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    pool = nn.AvgPool3d(2, 2)
    assert ChannelsLastAvgPool3d.supports(pool)
    assert not ChannelsLastAvgPool3d.supports(nn.AvgPool3d(3, 2))
    assert not ChannelsLastAvgPool3d.supports(nn.AvgPool3d(2, 2, padding=1))
    x = torch.randn(shape)
    with torch.inference_mode():
        out = ChannelsLastAvgPool3d(pool, channels_last=True)(x)
        torch.testing.assert_close(out, pool(x), rtol=1e-6, atol=1e-6)
        assert out.is_contiguous(memory_format=CL)


@pytest.mark.parametrize("slope", [None, 0.0, 0.01])
def test_norm_with_fused_residual_and_activation_equals_the_chain(slope: float | None) -> None:
    torch.manual_seed(5)
    original = nn.InstanceNorm3d(6, affine=True)
    nn.init.normal_(original.weight)
    nn.init.normal_(original.bias)
    norm = ChannelsLastInstanceNorm3d(original, channels_last=True)
    norm.slope = slope
    x, residual = channels_last(torch.randn(2, 6, 10, 9, 8) + 2), channels_last(torch.randn(2, 6, 10, 9, 8))
    with torch.inference_mode():
        expected = original(x) + residual
        if slope is not None:
            expected = F.leaky_relu(expected, slope)
        torch.testing.assert_close(norm(x, residual), expected, rtol=1e-5, atol=1e-5)
        # the PyTorch route (autocast off, but not channels-last) gives the same
        torch.testing.assert_close(
            norm(x.contiguous(), residual.contiguous()), expected, rtol=1e-5, atol=1e-5
        )
    before = x.clone()
    with torch.inference_mode():
        norm(x, residual)
    assert torch.equal(x, before)  # not in place unless told so


def test_concat_conv_equals_conv_of_the_concatenation() -> None:
    torch.manual_seed(6)
    conv = nn.Conv3d(10, 4, 3, padding=1)
    fused = ConcatConv3d(conv, 6)
    a, b = channels_last(torch.randn(1, 6, 12, 12, 12)), channels_last(torch.randn(1, 4, 12, 12, 12))
    with torch.inference_mode():
        expected = conv(torch.cat([a, b], 1))
        torch.testing.assert_close(fused(a, b), expected, rtol=1e-5, atol=1e-5)
        with torch.no_grad():
            conv.weight.mul_(2)  # a new weight version: the cached halves are rebuilt
        torch.testing.assert_close(fused(a, b), conv(torch.cat([a, b], 1)), rtol=1e-5, atol=1e-5)
    assert torch.is_grad_enabled()
    torch.testing.assert_close(
        fused(a, b), conv(torch.cat([a, b], 1)), rtol=1e-5, atol=1e-5
    )  # autograd route


def test_packed_weights_follow_in_place_weight_changes() -> None:
    torch.manual_seed(7)
    conv = nn.Conv3d(16, 16, 3, padding=1)  # 6912 weights ≥ 4³ voxels: packed
    fast = OneDnnConv3d(conv, channels_last=True)
    x = torch.randn(1, 16, 4, 4, 4)
    with torch.inference_mode():
        torch.testing.assert_close(fast(x), conv(x), rtol=1e-5, atol=1e-5)
        assert fast._packed
        with torch.no_grad():
            conv.weight.add_(0.5)
        torch.testing.assert_close(fast(x), conv(x), rtol=1e-5, atol=1e-5)


def small_resenc(deep_supervision: bool = False) -> nn.Module:
    from dynamic_network_architectures.architectures.unet import ResidualEncoderUNet

    torch.manual_seed(8)
    return ResidualEncoderUNet(
        input_channels=1, n_stages=4, features_per_stage=[8, 16, 32, 32], conv_op=nn.Conv3d, kernel_sizes=3,
        strides=[1, 2, 2, 2], n_blocks_per_stage=[1, 2, 2, 2], num_classes=2,
        n_conv_per_stage_decoder=[1, 1, 1],
        conv_bias=True, norm_op=nn.InstanceNorm3d, norm_op_kwargs={"eps": 1e-5, "affine": True},
        nonlin=nn.LeakyReLU, nonlin_kwargs={"inplace": True}, deep_supervision=deep_supervision,
    ).eval()  # fmt: skip


@pytest.mark.parametrize("deep_supervision", [False, True])
def test_resenc_network_is_fused_and_matches_the_original(deep_supervision: bool) -> None:
    pytest.importorskip("dynamic_network_architectures")
    network = small_resenc(deep_supervision)
    with torch.no_grad():  # non-trivial norm parameters
        for module in network.modules():
            if isinstance(module, nn.InstanceNorm3d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
    fast = accelerate_for_cpu(network)
    kinds = {type(m) for m in fast.modules()}
    assert {FusedResidualBlock, SplitConcatDecoder, ChannelsLastAvgPool3d} <= kinds
    norms = [m for m in fast.modules() if isinstance(m, ChannelsLastInstanceNorm3d)]
    assert all(m.inplace for m in norms)  # every norm of these blocks follows a fresh conv output
    assert sum(m.slope is not None for m in norms) >= len(norms) - 4  # only the skip paths' norms stay plain
    assert {id(p) for p in fast.parameters()} <= {id(p) for p in network.parameters()}
    x = torch.randn(2, 1, 32, 32, 32)
    with torch.inference_mode():
        expected, out = network(x), fast(x)
    if deep_supervision:
        assert isinstance(out, list) and len(out) == len(expected)
        for a, b in zip(out, expected, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    else:
        torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)


class NormUsedTwice(nn.Module):
    """One norm called from two Sequentials: it must not take over either's activation."""

    def __init__(self) -> None:
        super().__init__()
        norm = nn.InstanceNorm3d(4, affine=True)
        self.a = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), norm, nn.LeakyReLU(0.2))
        self.b = nn.Sequential(nn.Conv3d(4, 4, 3, padding=1), norm, nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.a(x))


def test_a_norm_used_twice_keeps_its_activations_separate() -> None:
    torch.manual_seed(9)
    network = NormUsedTwice().eval()
    assert max(call_sites(network).values()) == 2
    fast = accelerate_for_cpu(network)
    assert isinstance(fast.network.a[2], nn.LeakyReLU) and isinstance(fast.network.b[2], nn.ReLU)
    x = torch.randn(1, 1, 12, 12, 12)
    with torch.inference_mode():
        torch.testing.assert_close(fast(x), network(x), rtol=1e-4, atol=1e-4)


def test_a_norm_followed_by_its_activation_in_a_sequential_takes_it_over() -> None:
    torch.manual_seed(10)
    network = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.InstanceNorm3d(4), nn.LeakyReLU(0.1)).eval()
    fast = accelerate_for_cpu(network).network
    assert isinstance(fast[2], nn.Identity) and fast[1].slope == pytest.approx(0.1) and fast[1].inplace
    x = torch.randn(1, 1, 10, 10, 10)
    with torch.inference_mode():
        torch.testing.assert_close(accelerate_for_cpu(network)(x), network(x), rtol=1e-5, atol=1e-5)
