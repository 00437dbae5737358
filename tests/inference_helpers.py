"""Helpers for the inference tests: tiny networks and a slow, obviously-correct sliding-window reference."""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from napari_vesuvius.core.inference.model_api import InferenceModel, Normalization
from napari_vesuvius.core.inference.unet import UNetConfig, build_unet

TEST_CONFIG = UNetConfig(n_stages=3, features_base=4, features_max=16)


def tiny_network(seed: int = 0) -> torch.nn.Module:
    """A 3-stage, 4..16-channel U-Net (total stride 4) with seeded random weights."""
    torch.manual_seed(seed)
    network = build_unet(TEST_CONFIG).eval()
    # Make logits large enough that probabilities span (0, 1) instead of hugging 0.5.
    with torch.no_grad():
        for head in network.heads:
            head.weight.mul_(4.0)
    return network


def tiny_model(patch: int | tuple[int, int, int] = 16, seed: int = 0, networks: int = 1) -> InferenceModel:
    patch_size = (patch,) * 3 if isinstance(patch, int) else tuple(patch)
    nets = [tiny_network(seed + i) for i in range(networks)]
    return InferenceModel(nets, patch_size, normalization=Normalization(), name=f"tiny{seed}")


def scan_volume(shape: tuple[int, int, int], seed: int = 0, air_below_z: int = 0) -> np.ndarray:
    """Random uint8 'CT' in 1..255 (no air) with an all-zero slab ``z < air_below_z`` (outside the scan)."""
    rng = np.random.default_rng(seed)
    volume = rng.integers(1, 256, size=shape, dtype=np.uint8)
    volume[:air_below_z] = 0
    return volume


class MirrorAverage(torch.nn.Module):
    """Logits averaged over all flips of ``axes`` (spatial axes 0..2), written out by hand."""

    def __init__(self, networks: list[torch.nn.Module], axes: tuple[int, ...]) -> None:
        super().__init__()
        self.networks = torch.nn.ModuleList(networks)
        self.axes = axes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = []
        for network in self.networks:
            for k in range(len(self.axes) + 1):
                for combo in itertools.combinations(self.axes, k):
                    dims = [a + 2 for a in combo]
                    flipped = torch.flip(x, dims) if dims else x
                    out = network(flipped)
                    outputs.append(torch.flip(out, dims) if dims else out)
        return torch.stack(outputs).mean(0)


def _starts(size: int, tile: int, step: float) -> list[int]:
    n = math.ceil((size - tile) / (tile * step)) + 1
    if n == 1:
        return [0]
    return [int(np.round((size - tile) / (n - 1) * i)) for i in range(n)]


def reference_probability(volume: np.ndarray, network: torch.nn.Module, patch: tuple[int, int, int],
                          step: float = 0.5, normalization: Normalization | None = None,
                          surface_class: int = 1) -> np.ndarray:  # fmt: skip
    """Direct sliding window in float64: every tile, Gaussian-weighted logits, softmax, air → 0."""
    normalization = normalization or Normalization()
    norm = normalization.apply(volume).astype(np.float32)
    full = [max(s, p) for s, p in zip(volume.shape, patch, strict=True)]
    before = [(f - s) // 2 for f, s in zip(full, volume.shape, strict=True)]
    padded = np.zeros(full, np.float32)
    inner = tuple(slice(b, b + s) for b, s in zip(before, volume.shape, strict=True))
    padded[inner] = norm
    impulse = np.zeros(patch)
    impulse[tuple(p // 2 for p in patch)] = 1
    gauss = gaussian_filter(impulse, [p / 8 for p in patch], 0, mode="constant", cval=0)
    gauss = (gauss / gauss.max() * 10).astype(np.float32).astype(np.float64)
    gauss[gauss == 0] = gauss[gauss > 0].min()
    logits_sum = None
    weight_sum = np.zeros(full)
    for z, y, x in itertools.product(*(_starts(f, p, step) for f, p in zip(full, patch, strict=True))):
        region = (slice(z, z + patch[0]), slice(y, y + patch[1]), slice(x, x + patch[2]))
        with torch.no_grad():
            logits = network(torch.from_numpy(padded[region].copy())[None, None])[0].double().numpy()
        if logits_sum is None:
            logits_sum = np.zeros((logits.shape[0], *full))
        logits_sum[(slice(None), *region)] += logits * gauss
        weight_sum[region] += gauss
    logits = logits_sum / weight_sum
    logits -= logits.max(0, keepdims=True)
    prob = np.exp(logits)
    prob = (prob / prob.sum(0))[surface_class][inner]
    prob[volume == 0] = 0
    return prob
