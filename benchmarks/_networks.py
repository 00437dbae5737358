"""Networks the inference benchmarks run: nnU-Net's ResEnc presets and the built-in U-Net presets.

``resencm`` is the 3D network nnU-Net v2's ``nnUNetPlannerResEncM`` writes for a 128³ patch (the
configuration challenge participants train): dynamic-network-architectures' ``ResidualEncoderUNet``
with 6 stages, features 32–320, residual blocks 1-3-4-6-6-6, one conv per decoder stage, instance
norm and LeakyReLU — the same ``arch_kwargs`` a ``plans.json`` holds. Random weights (seeded): speed
does not depend on the values, and the benchmarks compare every method on the same weights.
"""

from __future__ import annotations

import torch
from torch import nn

#: ``arch_kwargs`` of nnU-Net's ResEncM 3d_fullres plans for a 128³ patch (classes as objects here).
RESENC_M = {
    "n_stages": 6,
    "features_per_stage": [32, 64, 128, 256, 320, 320],
    "kernel_sizes": [[3, 3, 3]] * 6,
    "strides": [[1, 1, 1]] + [[2, 2, 2]] * 5,
    "n_blocks_per_stage": [1, 3, 4, 6, 6, 6],
    "n_conv_per_stage_decoder": [1, 1, 1, 1, 1],
    "conv_bias": True,
    "norm_op_kwargs": {"eps": 1e-05, "affine": True},
    "nonlin_kwargs": {"inplace": True},
}
NETWORKS = ("resencm", "tiny", "small", "base")


def build_network(name: str, seed: int = 0) -> tuple[nn.Module, str]:
    """``(network in eval mode, one-line description)`` for a benchmark network name."""
    torch.manual_seed(seed)
    if name == "resencm":
        from dynamic_network_architectures.architectures.unet import ResidualEncoderUNet

        network = ResidualEncoderUNet(
            input_channels=1,
            num_classes=2,
            conv_op=nn.Conv3d,
            norm_op=nn.InstanceNorm3d,
            nonlin=nn.LeakyReLU,
            dropout_op=None,
            deep_supervision=False,
            **RESENC_M,
        )
        about = (
            "nnU-Net ResEncM (ResidualEncoderUNet, features 32–320, blocks 1-3-4-6-6-6, "
            f"{count_parameters(network):,} parameters)"
        )
        return network.eval(), about
    from napari_vesuvius.core.inference.unet import build_unet, preset

    config = preset(name)
    network = build_unet(config).eval()
    about = (
        f"built-in U-Net preset `{name}` ({count_parameters(network):,} parameters, "
        f"features {config.features})"
    )
    return network, about


def count_parameters(network: nn.Module) -> int:
    return sum(p.numel() for p in network.parameters())


def forward_gflop(name: str, patch: tuple[int, int, int]) -> float:
    """Work of one tile's forward in GFLOP (2 per multiply-add of the convolutions), counted on meta."""
    with torch.device("meta"):
        network, _ = build_network(name)
    total = 0.0

    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Conv3d):  # each output value: in_channels/groups · k³ products
            total += 2.0 * output.numel() * module.weight[0].numel()
        elif isinstance(module, nn.ConvTranspose3d):  # each input value: out_channels · k³ products
            total += 2.0 * inputs[0].numel() * module.weight[0].numel()

    handles = [m.register_forward_hook(hook) for m in network.modules()]
    try:
        with torch.inference_mode():
            network(torch.empty((1, 1, *patch), device="meta"))
    finally:
        for handle in handles:
            handle.remove()
    return total / 1e9
