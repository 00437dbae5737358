"""Faster CPU kernels for layers that PyTorch runs slowly on CPU, with the same weights and results.

Profiling the built-in and nnU-Net U-Nets on CPU (docs/benchmarks.md, "Sliding-window inference")
showed layers taking far longer than their arithmetic needs:

* the transposed convolution whose kernel equals its stride (every U-Net upsampling): no two kernel
  positions overlap, so outside channels-last it is one matrix product per kernel offset written into
  a strided view of the output (channels-last input goes to oneDNN's deconvolution, faster there);
* a 1×1×1 convolution (the segmentation head): a matrix product; with several intra-op threads
  oneDNN took ~30× longer than the product itself;
* the stem convolution of a one-channel input: oneDNN runs it faster with a zero second input channel
  (exactly the same sums: the extra terms are 0·0);
* any 3D convolution of a single small tile: PyTorch sends it to its slow reference kernel (6× slower
  per tile for 32³ tiles), so every ``Conv3d`` calls oneDNN directly;
* the whole network runs in the ``channels_last_3d`` layout, where oneDNN's 3D convolutions with few
  channels are ~1.8× faster; ``InstanceNorm3d`` (which would convert every activation back and forth)
  is replaced by one that keeps the layout. Its statistics are one float64 pass and normalising, an
  optional residual add and the activation that follows are a second, in place where the input is a
  convolution's fresh output read by nothing else (numba kernels, :mod:`._cpu_kernels`): allocating a
  new 67 MB activation costs more in page faults than the arithmetic;
* weights of the deep, wide convolutions are reordered for oneDNN once, not on every call;
* ``AvgPool3d`` with kernel == stride (a residual block's downsampling skip) pools channels-last.

:mod:`._cpu_network` swaps these in (``accelerate_for_cpu``). Outputs equal the original's up to float
rounding (tested).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ._cpu_kernels import avg_pool, channel_moments, normalize_


class StrideTransposeConv3d(nn.Module):
    """``ConvTranspose3d`` with kernel == stride (no overlap) as one matmul per kernel offset."""

    def __init__(self, original: nn.ConvTranspose3d, channels_last: bool = False) -> None:
        super().__init__()
        self.channels_last = channels_last
        self.weight = original.weight  # (in, out, kz, ky, kx)
        self.bias = original.bias
        self.kernel = tuple(int(k) for k in original.kernel_size)

    @staticmethod
    def supports(module: nn.Module) -> bool:
        return (
            type(module) is nn.ConvTranspose3d
            and tuple(module.kernel_size) == tuple(module.stride)
            and tuple(module.padding) == (0, 0, 0)
            and tuple(module.output_padding) == (0, 0, 0)
            and tuple(module.dilation) == (1, 1, 1)
            and module.groups == 1
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _layout(x, self.channels_last)
        n, cin, d, h, w = x.shape
        kz, ky, kx = self.kernel
        cout = self.weight.shape[1]
        if _is_channels_last(x):
            # oneDNN's deconvolution reads and writes channels-last directly: on a 128³ ResEncM tile
            # it took 0.45 s against 0.85 s for one matrix product plus the reordering copy
            return F.conv_transpose3d(x, self.weight, self.bias, stride=self.kernel)
        out = x.new_empty((n, cout, d, kz, h, ky, w, kx))
        flat = x.reshape(n, cin, d * h * w)
        for a, b, c in itertools.product(range(kz), range(ky), range(kx)):
            part = torch.matmul(self.weight[:, :, a, b, c].t(), flat)
            if self.bias is not None:
                part = part.add_(self.bias[:, None])
            out[:, :, :, a, :, b, :, c] = part.view(n, cout, d, h, w)
        return out.view(n, cout, d * kz, h * ky, w * kx)


class PointwiseConv3d(nn.Module):
    """A 1×1×1 ``Conv3d`` (stride 1, no groups) as a matrix product over the channels."""

    def __init__(self, original: nn.Conv3d, channels_last: bool = False) -> None:
        super().__init__()
        self.channels_last = channels_last
        self.weight = original.weight  # (out, in, 1, 1, 1)
        self.bias = original.bias

    @staticmethod
    def supports(module: nn.Module) -> bool:
        return (
            type(module) is nn.Conv3d
            and tuple(module.kernel_size) == (1, 1, 1)
            and tuple(module.stride) == (1, 1, 1)
            and tuple(module.padding) in ((0, 0, 0), "valid")
            and tuple(module.dilation) == (1, 1, 1)
            and module.groups == 1
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _layout(x, self.channels_last)
        n, cin, d, h, w = x.shape
        weight = self.weight.reshape(self.weight.shape[0], cin)
        if _is_channels_last(x):
            rows = x.permute(0, 2, 3, 4, 1).reshape(n * d * h * w, cin)
            out = rows @ weight.t() if self.bias is None else torch.addmm(self.bias, rows, weight.t())
            return out.view(n, d, h, w, -1).permute(0, 4, 1, 2, 3)
        out = torch.matmul(weight, x.reshape(n, cin, d * h * w))
        if self.bias is not None:
            out = out.add_(self.bias[:, None])
        return out.view(n, -1, d, h, w)


def _onednn_ready(x: torch.Tensor) -> bool:
    """True where oneDNN may run a float32 CPU convolution directly (no autocast, oneDNN built in)."""
    return (
        x.dtype == torch.float32
        and x.device.type == "cpu"
        and torch.backends.mkldnn.is_available()
        and torch.backends.mkldnn.enabled
        and not torch.is_autocast_enabled("cpu")
    )


def _onednn_conv3d(conv: nn.Conv3d, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``F.conv3d`` with ``conv``'s settings, run by oneDNN whatever the batch size.

    PyTorch's dispatcher sends a 3×3×3 convolution of a single tile with ``N·C·D·H <= 20480`` (32³
    tiles, or the deep 8³ levels of a 128³ tile) to its slow reference kernel: a one-tile forward of
    a small U-Net took 6× longer per tile than a two-tile one. Other dtypes, autocast and builds
    without oneDNN take ``F.conv3d``'s route.
    """
    if _onednn_ready(x) and weight.dtype == torch.float32:
        return torch.mkldnn_convolution(
            x, weight, conv.bias, conv.padding, conv.stride, conv.dilation, conv.groups
        )
    return F.conv3d(x, weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups)


class OneDnnConv3d(nn.Module):
    """A ``Conv3d`` (zero padding) always run by oneDNN; see :func:`_onednn_conv3d`.

    Where the weights outnumber the output voxels of a tile (the deep, wide levels: 320 channels at
    8³), oneDNN's reordering of the weights on every call costs as much as the convolution, so the
    reordered weights are kept (per input shape and weight version) and the convolution is called
    with them; the sums are the same.
    """

    def __init__(self, original: nn.Conv3d, channels_last: bool = False) -> None:
        super().__init__()
        self.original = original
        self.channels_last = channels_last
        self._packed: dict[tuple[int, ...], tuple[int, torch.Tensor]] = {}

    @staticmethod
    def supports(module: nn.Module) -> bool:
        return (
            type(module) is nn.Conv3d
            and module.padding_mode == "zeros"
            and not isinstance(module.padding, str)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _layout(x, self.channels_last)
        packed = self._packed_weight(x)
        if packed is None:
            return _onednn_conv3d(self.original, x, self.original.weight)
        conv = self.original
        return torch.ops.mkldnn._convolution_pointwise(
            x, packed, conv.bias, conv.padding, conv.stride, conv.dilation, conv.groups, "none", [], ""
        )

    def _packed_weight(self, x: torch.Tensor) -> torch.Tensor | None:
        conv = self.original
        weight = conv.weight
        voxels = math.prod(int(s) // int(t) for s, t in zip(x.shape[2:], conv.stride, strict=True))
        if not (_onednn_ready(x) and weight.dtype == torch.float32) or torch.is_grad_enabled():
            return None
        if conv.groups != 1 or weight.numel() < voxels or not _is_channels_last(x):
            return None
        key = tuple(x.shape)
        cached = self._packed.get(key)
        if cached is not None and cached[0] == weight._version:
            return cached[1]
        packed = torch._C._nn.mkldnn_reorder_conv3d_weight(
            weight.detach().to_mkldnn(), list(conv.padding), list(conv.stride), list(conv.dilation),
            conv.groups, list(x.shape),
        )  # fmt: skip
        if len(self._packed) >= 4:  # a few tile/batch shapes at most; never grow without bound
            self._packed.clear()
        self._packed[key] = (weight._version, packed)
        return packed


class ConcatConv3d(nn.Module):
    """``conv(cat([a, b], dim=1))`` without building the concatenation (a U-Net decoder's first conv).

    oneDNN convolves ``b`` with its half of the weights, then adds ``a``'s product into that output
    (a fused post-op). Shares ``conv``'s parameters; the two weight halves are cached per version.
    Other inputs (autograd, autocast, not channels-last) concatenate and call ``F.conv3d``.
    """

    def __init__(self, conv: nn.Conv3d, first_channels: int) -> None:
        super().__init__()
        self.weight = conv.weight
        self.bias = conv.bias
        self.first_channels = int(first_channels)
        self.padding = tuple(int(p) for p in conv.padding)
        self.stride = tuple(int(s) for s in conv.stride)
        self.dilation = tuple(int(d) for d in conv.dilation)
        self._halves: tuple[int, torch.Tensor, torch.Tensor] | None = None

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        a, b = _layout(a, True), _layout(b, True)
        fused = getattr(torch.ops.mkldnn, "_convolution_pointwise_", None)
        direct = _onednn_ready(a) and _onednn_ready(b) and not torch.is_grad_enabled()
        if not (direct and fused is not None and _is_channels_last(a) and _is_channels_last(b)):
            both = torch.cat([a, b], 1)
            return F.conv3d(both, self.weight, self.bias, self.stride, self.padding, self.dilation)
        weight_a, weight_b = self._split()
        geometry = (self.padding, self.stride, self.dilation, 1)
        out = torch.mkldnn_convolution(b, weight_b, self.bias, *geometry)
        fused.binary(out, a, weight_a, None, *geometry, "add", 1.0, None, [], None)  # out += conv(a)
        return out

    def _split(self) -> tuple[torch.Tensor, torch.Tensor]:
        version = self.weight._version
        if self._halves is None or self._halves[0] != version:
            weight = self.weight.detach()
            first = weight[:, : self.first_channels].contiguous()
            self._halves = (version, first, weight[:, self.first_channels :].contiguous())
        return self._halves[1], self._halves[2]


class SingleChannelConv3d(OneDnnConv3d):
    """A ``Conv3d`` on a one-channel input, given a zero second channel (oneDNN runs it faster)."""

    @staticmethod
    def supports(module: nn.Module) -> bool:
        return OneDnnConv3d.supports(module) and module.in_channels == 1 and module.groups == 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = self.original
        weight = torch.cat([conv.weight, torch.zeros_like(conv.weight)], dim=1)
        both = torch.cat([x, torch.zeros_like(x)], dim=1)
        if self.channels_last:
            both = both.contiguous(memory_format=torch.channels_last_3d)
        return _onednn_conv3d(conv, both, weight)


def _kernel_ready(x: torch.Tensor) -> bool:
    """True where the numba kernels may work on ``x`` in place (float32, channels-last, no autograd)."""
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and _is_channels_last(x)
        and not x.requires_grad
        and not torch.is_grad_enabled()
        and not torch.is_autocast_enabled("cpu")
    )


def _rows(x: torch.Tensor) -> np.ndarray:
    """A channels-last ``(N, C, D, H, W)`` tensor as a numpy ``(N, D·H·W, C)`` view (no copy)."""
    n, c = x.shape[:2]
    return x.detach().permute(0, 2, 3, 4, 1).numpy().reshape(n, -1, c)


class ChannelsLastInstanceNorm3d(nn.Module):
    """``InstanceNorm3d`` (no running stats) that keeps a ``channels_last_3d`` input in that layout.

    It can also take over what follows it: ``slope`` (set by :func:`accelerate_for_cpu` where the
    norm's only reader is a LeakyReLU/ReLU) applies that activation, and ``forward(x, residual)`` adds
    a residual before it (a residual block's ``norm → += skip → activation``). On float32
    channels-last input the statistics and the whole ``normalise (+ add) → activate`` chain are one
    pass each (:mod:`._cpu_kernels`); otherwise PyTorch ops do the same steps.
    """

    #: a channel whose mean² exceeds this × its variance gets the exact two-pass variance
    CANCELLATION_RATIO = 1e3

    def __init__(self, original: nn.InstanceNorm3d, channels_last: bool = False) -> None:
        super().__init__()
        self.channels_last = channels_last
        self.weight = original.weight
        self.bias = original.bias
        self.eps = float(original.eps)
        #: normalise the input in place (set by :func:`accelerate_for_cpu` only where the input is a
        #: convolution's fresh output that nothing else reads); skipped while autograd records
        self.inplace = False
        #: LeakyReLU slope of an activation fused into this norm (None: none; 0: ReLU)
        self.slope: float | None = None

    @staticmethod
    def supports(module: nn.Module) -> bool:
        return type(module) is nn.InstanceNorm3d and not module.track_running_stats

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        x = _layout(x, self.channels_last)
        if _kernel_ready(x) and (residual is None or residual.shape == x.shape):
            return self._fused(x, residual)
        out = self._torch_norm(x)
        if residual is not None:
            out = out + residual
        if self.slope is not None:
            out = F.leaky_relu(out, self.slope)
        return out

    def _fused(self, x: torch.Tensor, residual: torch.Tensor | None) -> torch.Tensor:
        out = x if self.inplace else x.clone(memory_format=torch.channels_last_3d)
        rows = _rows(out)
        skip = None if residual is None else _rows(_as_channels_last_float(residual))
        weight = None if self.weight is None else self.weight.detach().double().numpy()
        bias = None if self.bias is None else self.bias.detach().double().numpy()
        slope = 1.0 if self.slope is None else self.slope
        for i in range(rows.shape[0]):
            mean, var = channel_moments(rows[i])
            scale = 1.0 / np.sqrt(var + self.eps)
            if weight is not None:
                scale = scale * weight
            shift = -mean * scale
            if bias is not None:
                shift = shift + bias
            normalize_(rows[i], scale, shift, slope, None if skip is None else skip[i])
        return out

    def _torch_norm(self, x: torch.Tensor) -> torch.Tensor:
        if not _is_channels_last(x):
            return F.instance_norm(x, weight=self.weight, bias=self.bias, eps=self.eps)
        n, c = x.shape[:2]
        with torch.autocast("cpu", enabled=False):  # statistics in float32 even under bf16 autocast
            scale, shift = self._scale_shift(x.float())
        scale, shift = scale.view(n, c, 1, 1, 1), shift.view(n, c, 1, 1, 1)
        if self.inplace and x.dtype == torch.float32 and not x.requires_grad:
            # a fresh 67 MB activation costs ~25 ms of page faults; writing over the input avoids it
            return torch.addcmul(shift, x, scale, out=x)
        return torch.addcmul(shift, x, scale).to(x.dtype)

    def _scale_shift(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n, c = x.shape[:2]
        rows = x.permute(0, 2, 3, 4, 1).reshape(n, -1, c)  # a view: (n, voxels, c)
        count = rows.shape[1]
        mean = rows.sum(1) / count  # float32 cascade summation: ~1e-7 relative, no float64 copy
        square = torch.bmm(rows.transpose(1, 2), rows).diagonal(dim1=1, dim2=2) / count
        var = square - mean * mean
        if bool((mean * mean > self.CANCELLATION_RATIO * var.clamp_min(0)).any()):
            centred = rows - mean[:, None, :]
            var = torch.bmm(centred.transpose(1, 2), centred).diagonal(dim1=1, dim2=2) / count
        scale = torch.rsqrt(var.clamp_min(0) + self.eps)
        if self.weight is not None:
            scale = scale * self.weight.float()
        shift = -mean * scale
        if self.bias is not None:
            shift = shift + self.bias.float()
        return scale, shift


class ChannelsLastAvgPool3d(nn.Module):
    """``AvgPool3d`` with kernel == stride and no padding (a residual block's downsampling skip).

    PyTorch's pooling converted a channels-last 128³ activation to the other layout and back (1.8 s
    of a 35 s ResEncM tile); the kernel reads each voxel once and writes channels-last.
    """

    def __init__(self, original: nn.AvgPool3d, channels_last: bool = False) -> None:
        super().__init__()
        self.original = original
        self.channels_last = channels_last
        self.kernel = _triple(original.kernel_size)

    @staticmethod
    def supports(module: nn.Module) -> bool:
        if type(module) is not nn.AvgPool3d:
            return False
        stride = module.stride if module.stride is not None else module.kernel_size
        return (
            _triple(module.kernel_size) == _triple(stride)
            and _triple(module.padding) == (0, 0, 0)
            and not module.ceil_mode
            and module.divisor_override is None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _layout(x, self.channels_last)
        if not _kernel_ready(x):
            return self.original(x)
        src = x.detach().permute(0, 2, 3, 4, 1).numpy()
        pooled = np.stack([avg_pool(sample, self.kernel) for sample in src])
        return torch.from_numpy(pooled).permute(0, 4, 1, 2, 3)


def _triple(value: int | tuple[int, ...]) -> tuple[int, int, int]:
    if isinstance(value, int):
        return (value, value, value)
    values = tuple(int(v) for v in value)
    return (values[0], values[1], values[2]) if len(values) == 3 else (values[0],) * 3


def _as_channels_last_float(x: torch.Tensor) -> torch.Tensor:
    return x.float().contiguous(memory_format=torch.channels_last_3d)


class ChannelsLastInput(nn.Module):
    """Feeds the wrapped network its input in the ``channels_last_3d`` layout."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x.contiguous(memory_format=torch.channels_last_3d))


def _layout(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """In channels-last mode, bring an activation (e.g. from a kernel that returned NCDHW) back."""
    return x.contiguous(memory_format=torch.channels_last_3d) if channels_last and x.dim() == 5 else x


def _is_channels_last(x: torch.Tensor) -> bool:
    return x.dim() == 5 and x.shape[1] > 1 and x.is_contiguous(memory_format=torch.channels_last_3d)
