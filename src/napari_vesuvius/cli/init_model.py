"""``napari-vesuvius init-model``: write a built-in U-Net checkpoint with random (untrained) weights.

For demos, tests and as the starting point of training. The checkpoint says plainly that it is
untrained (``metadata.trained = false``, ``epochs = 0``); its predictions are meaningless.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    from napari_vesuvius.core.inference.model_api import Normalization

    default = Normalization()
    parser = subparsers.add_parser(
        "init-model",
        help="write an untrained built-in U-Net checkpoint (random weights)",
        description=__doc__,
    )
    parser.add_argument("--preset", choices=("tiny", "small", "medium"), default="tiny")
    parser.add_argument("--patch-size", type=int, nargs=3, metavar=("Z", "Y", "X"), default=(64, 64, 64))
    parser.add_argument("--output", type=Path, required=True, help="checkpoint file to write (e.g. model.pt)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the initial weights")
    parser.add_argument("--deep-supervision", action="store_true", help="build with deep-supervision heads")
    parser.add_argument("--mean", type=float, default=default.mean, help="normalisation: (x - mean) / std")
    parser.add_argument("--std", type=float, default=default.std)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing checkpoint file")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from napari_vesuvius.core.errors import CheckpointError
    from napari_vesuvius.core.inference.checkpoint import save_checkpoint
    from napari_vesuvius.core.inference.model_api import Normalization
    from napari_vesuvius.core.inference.unet import build_unet, count_parameters, preset
    from napari_vesuvius.core.outputs import check_output_path

    check_output_path(args.output, overwrite=args.overwrite)
    if not math.isfinite(args.std) or args.std <= 0:
        raise CheckpointError(args.output, f"--std must be a positive number, got {args.std}")
    if not math.isfinite(args.mean):
        raise CheckpointError(args.output, f"--mean must be a finite number, got {args.mean}")
    config = preset(args.preset, deep_supervision=args.deep_supervision)
    try:
        config.check_patch_size(args.patch_size)
    except ValueError as error:
        raise CheckpointError(args.output, str(error)) from None
    torch.manual_seed(args.seed)
    network = build_unet(config)
    metadata = {"trained": False, "epochs": 0, "seed": args.seed, "preset": args.preset,
                "note": "random initial weights from init-model; predictions are meaningless"}  # fmt: skip
    save_checkpoint(
        args.output, network, config, Normalization(mean=args.mean, std=args.std), args.patch_size, metadata
    )
    print(
        f"wrote {args.output}: preset {args.preset}, {count_parameters(network):,} parameters, "
        f"patch {tuple(args.patch_size)}, features {config.features}, untrained"
    )
    return 0
