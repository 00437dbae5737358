"""Faster CPU kernels for layers that PyTorch runs slowly on CPU, with the same weights and results.

Profiling the built-in and nnU-Net U-Nets on CPU (docs/benchmarks.md, "Sliding-window inference")
showed layers taking far longer than their arithmetic needs:

* the transposed convolution whose kernel equals its stride (every U-Net upsampling): no two kernel
  positions overlap, so it is a matrix product (channels-last: one product and one reordering copy;
  otherwise one product per kernel offset written into a strided view of the output);
* a 1×1×1 convolution (the segmentation head): a matrix product; with several intra-op threads
  oneDNN took ~30× longer than the product itself;
* the stem convolution of a one-channel input: oneDNN runs it faster with a zero second input channel
  (exactly the same sums: the extra terms are 0·0);
* any 3D convolution of a single small tile: PyTorch sends it to its slow reference kernel (6× slower
  per tile for 32³ tiles), so every ``Conv3d`` calls oneDNN directly;
* the whole network runs in the ``channels_last_3d`` layout, where oneDNN's 3D convolutions with few
  channels are ~1.8× faster; ``InstanceNorm3d`` (which would convert every activation back and forth)
  is replaced by one that keeps the layout: per-channel sums of squares by a matrix product, checked
  for cancellation and recomputed in two passes where the mean dwarfs the spread. Where the norm's
  input is a convolution's fresh output read by nothing else (the next module of an ``nn.Sequential``),
  it normalises in place: allocating a new 67 MB activation costs more in page faults than the
  arithmetic (together with float32 sums, a 128³ tile forward went from 1.54 s to 1.15 s).

:func:`accelerate_for_cpu` returns a copy of a network with those modules swapped for equivalents
that share the original parameters (no weights are copied). Outputs equal the original's up to float
rounding (tested). Other modules are untouched, so any ``nn.Module`` network works.
"""

from __future__ import annotations

import copy
import itertools

import torch
import torch.nn.functional as F
from torch import nn


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
            rows = x.permute(0, 2, 3, 4, 1).reshape(n * d * h * w, cin)
            # (cin, kz, ky, kx, cout): each row's products land as kz·ky·kx blocks of cout channels
            weight = self.weight.permute(0, 2, 3, 4, 1).reshape(cin, kz * ky * kx * cout)
            prod = (rows @ weight).view(n, d, h, w, kz, ky, kx, cout)
            if self.bias is not None:
                prod = prod.add_(self.bias)
            out = prod.permute(0, 1, 4, 2, 5, 3, 6, 7).reshape(n, d * kz, h * ky, w * kx, cout)
            return out.permute(0, 4, 1, 2, 3)
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


def _onednn_conv3d(conv: nn.Conv3d, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``F.conv3d`` with ``conv``'s settings, run by oneDNN whatever the batch size.

    PyTorch's dispatcher sends a 3×3×3 convolution of a single tile with ``N·C·D·H <= 20480`` (32³
    tiles, or the deep 8³ levels of a 128³ tile) to its slow reference kernel: a one-tile forward of
    a small U-Net took 6× longer per tile than a two-tile one. Other dtypes, autocast and builds
    without oneDNN take ``F.conv3d``'s route.
    """
    if (
        x.dtype == torch.float32
        and weight.dtype == torch.float32
        and x.device.type == "cpu"
        and torch.backends.mkldnn.is_available()
        and torch.backends.mkldnn.enabled
        and not torch.is_autocast_enabled("cpu")
    ):
        return torch.mkldnn_convolution(
            x, weight, conv.bias, conv.padding, conv.stride, conv.dilation, conv.groups
        )
    return F.conv3d(x, weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups)


class OneDnnConv3d(nn.Module):
    """A ``Conv3d`` (zero padding) always run by oneDNN; see :func:`_onednn_conv3d`."""

    def __init__(self, original: nn.Conv3d, channels_last: bool = False) -> None:
        super().__init__()
        self.original = original
        self.channels_last = channels_last

    @staticmethod
    def supports(module: nn.Module) -> bool:
        return (
            type(module) is nn.Conv3d
            and module.padding_mode == "zeros"
            and not isinstance(module.padding, str)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _onednn_conv3d(self.original, _layout(x, self.channels_last), self.original.weight)


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


class ChannelsLastInstanceNorm3d(nn.Module):
    """``InstanceNorm3d`` (no running stats) that keeps a ``channels_last_3d`` input in that layout."""

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

    @staticmethod
    def supports(module: nn.Module) -> bool:
        return type(module) is nn.InstanceNorm3d and not module.track_running_stats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _layout(x, self.channels_last)
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


_CONVOLUTIONS = (nn.Conv3d, StrideTransposeConv3d, PointwiseConv3d, SingleChannelConv3d, OneDnnConv3d)

#: Tried in this order: the first whose ``supports`` accepts a module replaces it.
_REPLACEMENTS: tuple[type[nn.Module], ...] = (
    StrideTransposeConv3d,
    PointwiseConv3d,
    SingleChannelConv3d,
    OneDnnConv3d,
    ChannelsLastInstanceNorm3d,
)


def accelerate_for_cpu(network: nn.Module, channels_last: bool = True) -> nn.Module:
    """A copy of ``network`` (sharing its parameters) with the slow CPU layers swapped; see module doc."""
    shared = {id(t): t for t in itertools.chain(network.parameters(), network.buffers())}
    fast = copy.deepcopy(network, memo=shared)
    _swap(fast, channels_last)
    if channels_last:
        fast = ChannelsLastInput(fast)
    return fast.eval()


def _swap(module: nn.Module, channels_last: bool, swapped: dict[int, nn.Module] | None = None) -> None:
    """Replace supported children in place; a module referenced twice gets one shared replacement.

    A norm may work in place only where every reference to it directly follows a convolution in an
    ``nn.Sequential`` that runs its children in order (the convolution's output then feeds nothing else;
    a subclass with its own ``forward`` might read it again).
    """
    swapped = {} if swapped is None else swapped
    in_order = isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward
    previous: nn.Module | None = None
    for name, child in list(module.named_children()):
        after_conv = in_order and isinstance(previous, _CONVOLUTIONS)
        if id(child) in swapped:
            child = swapped[id(child)]
            setattr(module, name, child)
        elif not isinstance(child, _REPLACEMENTS):
            replacement = next((r for r in _REPLACEMENTS if r.supports(child)), None)  # type: ignore[attr-defined]
            if replacement is None:
                _swap(child, channels_last, swapped)
            else:
                new = replacement(child, channels_last)  # type: ignore[call-arg]
                if isinstance(new, ChannelsLastInstanceNorm3d):
                    new.inplace = True
                swapped[id(child)] = new
                setattr(module, name, new)
                child = new
        if isinstance(child, ChannelsLastInstanceNorm3d):
            child.inplace = child.inplace and after_conv
        previous = child
