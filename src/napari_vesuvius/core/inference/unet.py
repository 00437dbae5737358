"""The built-in 3D U-Net: a residual encoder in the style of nnU-Net's ``ResidualEncoderUNet``.

Stage ``i`` has ``min(features_base * 2**i, features_max)`` channels. The encoder stem is one
conv-InstanceNorm-LeakyReLU, then each stage is a stack of residual basic blocks; the first block of
every stage after the first downsamples with a strided convolution (its shortcut is a strided 1×1×1
projection). The decoder upsamples with transposed convolutions, concatenates the skip connection and
runs conv-InstanceNorm-LeakyReLU layers; a 1×1×1 convolution gives the class logits. With
``deep_supervision`` the network also returns the logits of the lower decoder levels (highest
resolution first, as nnU-Net does) for training; inference uses the first output only.

This module imports torch at import time: only code that builds networks imports it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

Triple = tuple[int, int, int]


def _triples(values: Sequence[Any], name: str) -> tuple[Triple, ...]:
    out = []
    for value in values:
        triple = (int(value),) * 3 if isinstance(value, int) else tuple(int(v) for v in value)
        if len(triple) != 3 or min(triple) < 1:
            raise ValueError(f"UNetConfig.{name}: expected positive 3-tuples, got {value!r}")
        out.append(triple)
    return tuple(out)


@dataclass(frozen=True)
class UNetConfig:
    """Architecture of the built-in U-Net (plain types only, so it round-trips through a checkpoint).

    ``kernel_sizes``, ``strides``, ``blocks_per_stage`` and ``decoder_convs`` may be left empty: they
    then default to 3×3×3 kernels, stride 1 for the first stage and 2 after, one residual block per
    stage and one decoder conv per level.
    """

    in_channels: int = 1
    num_classes: int = 2
    n_stages: int = 5
    features_base: int = 32
    features_max: int = 320
    blocks_per_stage: tuple[int, ...] = ()
    decoder_convs: tuple[int, ...] = ()
    kernel_sizes: tuple[Triple, ...] = ()
    strides: tuple[Triple, ...] = ()
    deep_supervision: bool = False
    negative_slope: float = 0.01

    def __post_init__(self) -> None:
        n = int(self.n_stages)
        if n < 1:
            raise ValueError("UNetConfig.n_stages must be at least 1")
        blocks = tuple(int(b) for b in self.blocks_per_stage) or (1,) * n
        decoder = tuple(int(b) for b in self.decoder_convs) or (1,) * (n - 1)
        kernels = _triples(self.kernel_sizes, "kernel_sizes") or ((3, 3, 3),) * n
        strides = _triples(self.strides, "strides") or ((1, 1, 1),) + ((2, 2, 2),) * (n - 1)
        for name, value, length in (
            ("blocks_per_stage", blocks, n),
            ("decoder_convs", decoder, n - 1),
            ("kernel_sizes", kernels, n),
            ("strides", strides, n),
        ):
            if len(value) != length:
                raise ValueError(f"UNetConfig.{name}: expected {length} entries, got {len(value)}")
        if min(blocks) < 1 or (decoder and min(decoder) < 1):
            raise ValueError("UNetConfig: every stage needs at least one block / decoder conv")
        if any(k % 2 == 0 for triple in kernels for k in triple):
            raise ValueError("UNetConfig.kernel_sizes must be odd (same padding)")
        if self.in_channels < 1 or self.num_classes < 2:
            raise ValueError("UNetConfig: in_channels >= 1 and num_classes >= 2 are required")
        object.__setattr__(self, "blocks_per_stage", blocks)
        object.__setattr__(self, "decoder_convs", decoder)
        object.__setattr__(self, "kernel_sizes", kernels)
        object.__setattr__(self, "strides", strides)

    @property
    def features(self) -> tuple[int, ...]:
        """Channels of each stage: ``features_base * 2**i`` capped at ``features_max``."""
        return tuple(min(self.features_base * 2**i, self.features_max) for i in range(self.n_stages))

    @property
    def divisor(self) -> Triple:
        """The patch size must be a multiple of this on each axis (product of the strides)."""
        out = [1, 1, 1]
        for triple in self.strides:
            out = [a * b for a, b in zip(out, triple, strict=True)]
        return (out[0], out[1], out[2])

    def check_patch_size(self, patch_size: Sequence[int]) -> None:
        """Raise ``ValueError`` when ``patch_size`` is not divisible by the network's total stride."""
        if len(patch_size) != 3 or any(
            int(p) < 1 or int(p) % d for p, d in zip(patch_size, self.divisor, strict=True)
        ):
            raise ValueError(f"patch size {tuple(patch_size)} must be 3 positive multiples of {self.divisor}")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (lists of ints) for checkpoints."""
        data = asdict(self)
        for key in ("blocks_per_stage", "decoder_convs"):
            data[key] = list(data[key])
        for key in ("kernel_sizes", "strides"):
            data[key] = [list(t) for t in data[key]]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> UNetConfig:
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown UNetConfig fields: {sorted(unknown)}")
        values = dict(data)
        for key in ("blocks_per_stage", "decoder_convs"):
            if key in values:
                values[key] = tuple(values[key])
        for key in ("kernel_sizes", "strides"):
            if key in values:
                values[key] = tuple(tuple(t) for t in values[key])
        return cls(**values)


PRESETS: dict[str, UNetConfig] = {
    # ~0.3 M parameters: tests and CPU demos.
    "tiny": UNetConfig(n_stages=4, features_base=8, features_max=64, blocks_per_stage=(1, 1, 1, 1)),
    # ~10 M parameters: quick GPU experiments, slow but usable CPU inference.
    "small": UNetConfig(n_stages=5, features_base=16, features_max=256, blocks_per_stage=(1, 2, 2, 2, 2)),
    # nnU-Net ResEnc-M-like (~100 M parameters): 6 stages, 32..320 channels, 1-3-4-6-6-6 blocks.
    "medium": UNetConfig(n_stages=6, features_base=32, features_max=320, blocks_per_stage=(1, 3, 4, 6, 6, 6)),
}


def preset(name: str, **overrides: Any) -> UNetConfig:
    """A named configuration, optionally with fields replaced (e.g. ``deep_supervision=True``)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    data = PRESETS[name].to_dict()
    data.update(overrides)
    return UNetConfig.from_dict(data)


def _conv(cin: int, cout: int, kernel: Triple, stride: Triple = (1, 1, 1)) -> nn.Conv3d:
    return nn.Conv3d(cin, cout, kernel, stride=stride, padding=tuple(k // 2 for k in kernel), bias=True)


class ConvNormAct(nn.Sequential):
    """Conv3d → InstanceNorm3d (affine) → LeakyReLU."""

    def __init__(self, cin: int, cout: int, kernel: Triple, stride: Triple, slope: float) -> None:
        super().__init__(
            _conv(cin, cout, kernel, stride),
            nn.InstanceNorm3d(cout, eps=1e-5, affine=True),
            nn.LeakyReLU(slope, inplace=True),
        )


class ResidualBlock(nn.Module):
    """Basic residual block: conv-norm-act-conv-norm plus shortcut, then LeakyReLU.

    A strided or channel-changing block uses a strided 1×1×1 conv + norm as its shortcut.
    """

    def __init__(self, cin: int, cout: int, kernel: Triple, stride: Triple, slope: float) -> None:
        super().__init__()
        self.conv1 = ConvNormAct(cin, cout, kernel, stride, slope)
        self.conv2 = _conv(cout, cout, kernel)
        self.norm2 = nn.InstanceNorm3d(cout, eps=1e-5, affine=True)
        self.act = nn.LeakyReLU(slope, inplace=True)
        self.shortcut: nn.Module
        if cin != cout or any(s != 1 for s in stride):
            self.shortcut = nn.Sequential(
                nn.Conv3d(cin, cout, 1, stride=stride, bias=False),
                nn.InstanceNorm3d(cout, eps=1e-5, affine=True),
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm2(self.conv2(self.conv1(x))) + self.shortcut(x))


class ResidualEncoderUNet(nn.Module):
    """U-Net with a residual encoder; see the module docstring."""

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = config
        feats, slope = config.features, config.negative_slope
        self.stem = ConvNormAct(config.in_channels, feats[0], config.kernel_sizes[0], (1, 1, 1), slope)
        self.encoder = nn.ModuleList()
        cin = feats[0]
        for i, cout in enumerate(feats):
            blocks = [ResidualBlock(cin, cout, config.kernel_sizes[i], config.strides[i], slope)]
            blocks += [
                ResidualBlock(cout, cout, config.kernel_sizes[i], (1, 1, 1), slope)
                for _ in range(config.blocks_per_stage[i] - 1)
            ]
            self.encoder.append(nn.Sequential(*blocks))
            cin = cout
        self.upsample = nn.ModuleList()
        self.decoder = nn.ModuleList()
        self.heads = nn.ModuleList()
        # Decoder level j goes from stage j+1 back to stage j (built deepest first).
        for j in reversed(range(config.n_stages - 1)):
            stride = config.strides[j + 1]
            self.upsample.append(nn.ConvTranspose3d(feats[j + 1], feats[j], stride, stride=stride, bias=True))
            convs = [ConvNormAct(2 * feats[j], feats[j], config.kernel_sizes[j], (1, 1, 1), slope)]
            convs += [
                ConvNormAct(feats[j], feats[j], config.kernel_sizes[j], (1, 1, 1), slope)
                for _ in range(config.decoder_convs[j] - 1)
            ]
            self.decoder.append(nn.Sequential(*convs))
            self.heads.append(nn.Conv3d(feats[j], config.num_classes, 1, bias=True))
        if config.n_stages == 1:
            self.heads.append(nn.Conv3d(feats[0], config.num_classes, 1, bias=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        """Logits ``(B, num_classes, Z, Y, X)``; a list (full resolution first) with deep supervision."""
        skips = []
        x = self.stem(x)
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
        if self.config.n_stages == 1:
            return self.heads[0](x)
        outputs = []
        x = skips[-1]
        for level, (up, dec) in enumerate(zip(self.upsample, self.decoder, strict=True)):
            x = dec(torch.cat((up(x), skips[-2 - level]), dim=1))
            last = level == len(self.decoder) - 1
            if self.config.deep_supervision or last:
                outputs.append(self.heads[level](x))
        if not self.config.deep_supervision:
            return outputs[-1]
        return outputs[::-1]


def build_unet(config: UNetConfig) -> ResidualEncoderUNet:
    """Build the network for ``config`` (random initialisation: He-normal convs, zero biases)."""
    network = ResidualEncoderUNet(config)
    for module in network.modules():
        if isinstance(module, nn.Conv3d | nn.ConvTranspose3d):
            nn.init.kaiming_normal_(module.weight, a=config.negative_slope)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return network


def count_parameters(network: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in network.parameters() if p.requires_grad)
