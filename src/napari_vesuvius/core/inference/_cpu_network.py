"""A CPU copy of a network with the faster layers of :mod:`._cpu_layers` swapped in and fused.

:func:`accelerate_for_cpu` deep-copies the network's modules (sharing its parameters: no weights are
copied), replaces every supported layer, then fuses what the kernels can do in one pass:

* a norm followed, in an ``nn.Sequential``, by a LeakyReLU/ReLU takes the activation over (the
  activation becomes ``nn.Identity``);
* a residual block of nnU-Net's ResEnc networks (``BasicBlockD`` of dynamic-network-architectures:
  ``conv → norm → act → conv → norm, += skip, act``) ends in one fused ``norm + skip → act`` pass.

Modules are matched by class identity (never by name), and only where their whole forward is known;
anything else is left as it is, so any ``nn.Module`` network works.
"""

from __future__ import annotations

import copy
import importlib
import itertools
from collections import Counter
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ._cpu_layers import (
    ChannelsLastAvgPool3d,
    ChannelsLastInput,
    ChannelsLastInstanceNorm3d,
    ConcatConv3d,
    OneDnnConv3d,
    PointwiseConv3d,
    SingleChannelConv3d,
    StrideTransposeConv3d,
)

_CONVOLUTIONS = (nn.Conv3d, StrideTransposeConv3d, PointwiseConv3d, SingleChannelConv3d, OneDnnConv3d)

#: Tried in this order: the first whose ``supports`` accepts a module replaces it.
_REPLACEMENTS: tuple[type[nn.Module], ...] = (
    StrideTransposeConv3d,
    PointwiseConv3d,
    SingleChannelConv3d,
    OneDnnConv3d,
    ChannelsLastInstanceNorm3d,
    ChannelsLastAvgPool3d,
)


def activation_slope(module: Any) -> float | None:
    """The LeakyReLU slope of ``module`` (0 for ReLU); None for anything else."""
    if type(module) is nn.LeakyReLU:
        return float(module.negative_slope)
    if type(module) is nn.ReLU:
        return 0.0
    return None


def _dna_class(module: str, name: str) -> type | None:
    """A class of dynamic-network-architectures (the nnU-Net extra), or None where it is not installed."""
    try:
        return getattr(importlib.import_module(f"dynamic_network_architectures.{module}"), name)
    except (ImportError, AttributeError):
        return None


def _basic_block_class() -> type | None:
    return _dna_class("building_blocks.residual", "BasicBlockD")


def _conv_norm_act_class() -> type | None:
    return _dna_class("building_blocks.simple_conv_blocks", "ConvDropoutNormReLU")


def call_sites(network: nn.Module) -> Counter:
    """How many places may call each module (by ``id``): its slots in the modules that hold it.

    ``ConvDropoutNormReLU`` keeps its conv, norm and activation both as attributes and in
    ``all_modules``, but its forward only runs ``all_modules``; only those slots count.
    """
    wrapper = _conv_norm_act_class()
    sites: Counter = Counter()
    for holder in network.modules():
        only_sequence = wrapper is not None and type(holder) is wrapper
        for name, child in holder._modules.items():
            if child is not None and not (only_sequence and name != "all_modules"):
                sites[id(child)] += 1
    return sites


class FusedResidualBlock(nn.Module):
    """nnU-Net's ``BasicBlockD`` with its closing ``norm, += skip, activation`` as one fused pass."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.conv1 = block.conv1
        self.conv2 = block.conv2.conv
        self.norm = block.conv2.norm
        skip = block.skip
        self.skip_module = skip if isinstance(skip, nn.Module) else None
        nonlin = block.nonlin2
        self.slope = None if not isinstance(nonlin, nn.Module) else activation_slope(nonlin)

    @staticmethod
    def supports(module: nn.Module) -> bool:
        cls = _basic_block_class()
        if cls is None or type(module) is not cls:
            return False
        conv2 = module.conv2
        steps = list(conv2.all_modules)
        nonlin = module.nonlin2
        skip = module.skip
        return (
            not module.apply_stochastic_depth
            and not module.apply_se
            and len(steps) == 2
            and steps[0] is conv2.conv
            and steps[1] is getattr(conv2, "norm", None)
            and ChannelsLastInstanceNorm3d.supports(conv2.norm)
            and (activation_slope(nonlin) is not None or not isinstance(nonlin, nn.Module))
            and (isinstance(skip, nn.Module) or _is_identity(skip))
        )

    def finish(self) -> None:
        """After the children were swapped: the norm works in place on conv2's output, then activates."""
        if isinstance(self.norm, ChannelsLastInstanceNorm3d):
            self.norm.inplace = True
            self.norm.slope = self.slope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.skip_module is None else self.skip_module(x)
        out = self.conv2(self.conv1(x))
        if isinstance(self.norm, ChannelsLastInstanceNorm3d):
            return self.norm(out, residual)
        out = self.norm(out) + residual  # pragma: no cover - every supported norm is swapped
        return out if self.slope is None else torch.nn.functional.leaky_relu(out, self.slope)


class SplitConcatDecoder(nn.Module):
    """nnU-Net's ``UNetDecoder`` whose stages convolve ``[upsampled, skip]`` without concatenating them.

    ``conv(cat(a, b)) = conv_a(a) + conv_b(b)`` with the weights split along the input channels; oneDNN
    adds the second product into the first (:class:`ConcatConv3d`). Measured on a 128³ ResEncM tile,
    one thread: the 64 → 32 channel stage took 3.1–3.4 s split against 4.0–4.2 s with the concatenation
    (the copy, and oneDNN running ``cin = 2·cout`` slower per FLOP).
    """

    def __init__(self, decoder: nn.Module) -> None:
        super().__init__()
        self.transpconvs = decoder.transpconvs
        self.stages = decoder.stages
        self.seg_layers = decoder.seg_layers
        self.deep_supervision = bool(decoder.deep_supervision)
        self.first_convs = nn.ModuleList(
            ConcatConv3d(stage.convs[0].conv, int(up.out_channels))
            for stage, up in zip(decoder.stages, decoder.transpconvs, strict=True)
        )

    @staticmethod
    def supports(module: nn.Module) -> bool:
        decoder_class = _dna_class("building_blocks.unet_decoder", "UNetDecoder")
        stacked = _dna_class("building_blocks.simple_conv_blocks", "StackedConvBlocks")
        wrapper = _conv_norm_act_class()
        if decoder_class is None or type(module) is not decoder_class:
            return False
        for stage, up in zip(module.stages, module.transpconvs, strict=True):
            if type(stage) is not stacked or type(up) is not nn.ConvTranspose3d:
                return False
            first = stage.convs[0]
            if type(first) is not wrapper or first.all_modules[0] is not first.conv:
                return False
            conv = first.conv
            if not OneDnnConv3d.supports(conv) or conv.groups != 1 or conv.in_channels <= up.out_channels:
                return False
        return True

    def finish(self) -> None:
        """Nothing to adjust after the children were swapped."""

    def forward(self, skips: list[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
        lres_input = skips[-1]
        seg_outputs = []
        last = len(self.stages) - 1
        for s, stage in enumerate(self.stages):
            x = self.first_convs[s](self.transpconvs[s](lres_input), skips[-(s + 2)])
            for module in list(stage.convs[0].all_modules)[1:]:
                x = module(x)
            for block in list(stage.convs)[1:]:
                x = block(x)
            if self.deep_supervision:
                seg_outputs.append(self.seg_layers[s](x))
            elif s == last:
                seg_outputs.append(self.seg_layers[-1](x))
            lres_input = x
        seg_outputs = seg_outputs[::-1]
        return seg_outputs if self.deep_supervision else seg_outputs[0]


def _is_identity(function: Callable[..., Any]) -> bool:
    """True for the ``lambda x: x`` skip dynamic-network-architectures uses when shapes already match."""
    try:
        probe = object()
        return function(probe) is probe
    except Exception:
        return False


#: Block-level replacements: built first, then their children are swapped, then ``finish()``.
_BLOCKS: tuple[type[nn.Module], ...] = (FusedResidualBlock, SplitConcatDecoder)


def accelerate_for_cpu(network: nn.Module, channels_last: bool = True) -> nn.Module:
    """A copy of ``network`` (sharing its parameters) with the slow CPU layers swapped; see module doc."""
    shared = {id(t): t for t in itertools.chain(network.parameters(), network.buffers())}
    fast = copy.deepcopy(network, memo=shared)
    uses = call_sites(fast)
    _swap(fast, channels_last, {}, uses)
    if channels_last:
        fast = ChannelsLastInput(fast)
    return fast.eval()


def _swap(module: nn.Module, channels_last: bool, swapped: dict[int, nn.Module], uses: Counter) -> None:
    """Replace supported children in place; a module referenced twice gets one shared replacement.

    A norm may work in place only where every reference to it directly follows a convolution in an
    ``nn.Sequential`` that runs its children in order (the convolution's output then feeds nothing else;
    a subclass with its own ``forward`` might read it again). It takes over the activation after it
    only where both are used once in the whole network.
    """
    in_order = isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward
    wrapper = _conv_norm_act_class()
    previous: nn.Module | None = None
    previous_id = 0
    for name, child in list(module.named_children()):
        after_conv = in_order and isinstance(previous, _CONVOLUTIONS)
        # a ConvDropoutNormReLU's attribute slots are never called (see call_sites)
        called = not (wrapper is not None and type(module) is wrapper and name != "all_modules")
        original_id = id(child)
        if id(child) in swapped:
            child = swapped[id(child)]
            setattr(module, name, child)
        elif not isinstance(child, _REPLACEMENTS + _BLOCKS):
            child = _replace(module, name, child, channels_last, swapped, uses)
        if isinstance(child, ChannelsLastInstanceNorm3d) and called:
            child.inplace = child.inplace and after_conv
        slope = activation_slope(child)
        fusable = isinstance(previous, ChannelsLastInstanceNorm3d) and previous.slope is None
        if in_order and fusable and slope is not None and uses[previous_id] == 1 and uses[original_id] == 1:
            assert isinstance(previous, ChannelsLastInstanceNorm3d)
            previous.slope = slope
            child = nn.Identity()
            setattr(module, name, child)
        previous, previous_id = child, original_id


def _replace(
    module: nn.Module,
    name: str,
    child: nn.Module,
    channels_last: bool,
    swapped: dict[int, nn.Module],
    uses: Counter,
) -> nn.Module:
    """The replacement of ``child`` (swapped into ``module``), or ``child`` with its own children swapped."""
    block = next((b for b in _BLOCKS if b.supports(child)), None)  # type: ignore[attr-defined]
    if block is not None:
        new = block(child)
        _swap(new, channels_last, swapped, uses)
        new.finish()  # type: ignore[operator]
    else:
        replacement = next((r for r in _REPLACEMENTS if r.supports(child)), None)  # type: ignore[attr-defined]
        if replacement is None:
            _swap(child, channels_last, swapped, uses)
            return child
        new = replacement(child, channels_last)  # type: ignore[call-arg]
        if isinstance(new, ChannelsLastInstanceNorm3d):
            new.inplace = True
    swapped[id(child)] = new
    setattr(module, name, new)
    return new
