"""Build a real nnU-Net v2 trained-model folder with random weights, for tests and benchmarks.

The layout, ``plans.json``/``dataset.json`` formats and the checkpoint dict follow what nnU-Net v2's
experiment planner and ``nnUNetTrainer.save_checkpoint`` write, including the parts that make
checkpoints awkward to load safely: numpy scalars (``_best_ema``, the training log) and a
``torch.device`` in ``init_args``. Networks come from ``dynamic-network-architectures``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

TRAINER = "nnUNetTrainer"
PLANS_NAME = "nnUNetResEncUNetMPlans"
DATASET_NAME = "Dataset042_VesuviusSurface"
RESENC_CLASS = "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet"
PLAIN_CLASS = "dynamic_network_architectures.architectures.unet.PlainConvUNet"

# Intensity statistics of the synthetic uint8 "CT" (what nnU-Net's fingerprint extractor stores).
CT_PROPERTIES = {
    "max": 255.0,
    "mean": 118.25,
    "median": 117.0,
    "min": 0.0,
    "percentile_00_5": 14.0,
    "percentile_99_5": 231.0,
    "std": 41.5,
}


def architecture_dict(
    network: str, patch_size: Sequence[int], n_stages: int, base_features: int = 32, max_features: int = 320
) -> dict[str, Any]:
    """The ``architecture`` entry of a 3D configuration, as nnU-Net's ResEnc / default planners write it."""
    dims = len(patch_size)
    conv = "torch.nn.modules.conv.Conv3d" if dims == 3 else "torch.nn.modules.conv.Conv2d"
    norm = (
        "torch.nn.modules.instancenorm.InstanceNorm3d"
        if dims == 3
        else "torch.nn.modules.instancenorm.InstanceNorm2d"
    )
    kwargs: dict[str, Any] = {
        "n_stages": n_stages,
        "features_per_stage": [min(base_features * 2**i, max_features) for i in range(n_stages)],
        "conv_op": conv,
        "kernel_sizes": [[3] * dims for _ in range(n_stages)],
        "strides": [[1] * dims] + [[2] * dims for _ in range(n_stages - 1)],
    }
    if network == "ResidualEncoderUNet":
        kwargs["n_blocks_per_stage"] = [1, 3, 4, 6, 6, 6, 6][:n_stages]
        class_name = RESENC_CLASS
    elif network == "PlainConvUNet":
        kwargs["n_conv_per_stage"] = [2] * n_stages
        class_name = PLAIN_CLASS
    else:
        raise ValueError(f"unknown network {network!r}")
    kwargs.update(
        {
            "n_conv_per_stage_decoder": [1 if network == "ResidualEncoderUNet" else 2] * (n_stages - 1),
            "conv_bias": True,
            "norm_op": norm,
            "norm_op_kwargs": {"eps": 1e-05, "affine": True},
            "dropout_op": None,
            "dropout_op_kwargs": None,
            "nonlin": "torch.nn.LeakyReLU",
            "nonlin_kwargs": {"inplace": True},
        }
    )
    return {
        "network_class_name": class_name,
        "arch_kwargs": kwargs,
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
    }


def make_plans(
    *,
    config: str = "3d_fullres",
    patch_size: Sequence[int] = (32, 32, 32),
    normalization: str = "CTNormalization",
    n_stages: int = 3,
    network: str = "ResidualEncoderUNet",
    base_features: int = 32,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
) -> dict[str, Any]:
    """A ``plans.json`` dict in nnU-Net v2's format with one trained configuration (plus a 2D one)."""
    patch = [int(p) for p in patch_size]
    configuration = {
        "data_identifier": f"{PLANS_NAME}_{config}",
        "preprocessor_name": "DefaultPreprocessor",
        "batch_size": 2,
        "patch_size": patch,
        "median_image_size_in_voxels": [320.0, 320.0, 320.0][: len(patch)],
        "spacing": [float(s) for s in spacing][: len(patch)],
        "normalization_schemes": [normalization],
        "use_mask_for_norm": [False],
        "resampling_fn_data": "resample_data_or_seg_to_shape",
        "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
        "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities_kwargs": {
            "is_seg": False,
            "order": 1,
            "order_z": 0,
            "force_separate_z": None,
        },
        "architecture": architecture_dict(network, patch, n_stages, base_features),
        "batch_dice": False,
    }
    configurations: dict[str, Any] = {config: configuration}
    if config != "2d":
        two_d = json.loads(json.dumps(configuration))
        two_d.update(
            {
                "data_identifier": f"{PLANS_NAME}_2d",
                "batch_size": 12,
                "patch_size": patch[1:],
                "median_image_size_in_voxels": [320.0, 320.0],
                "spacing": [float(s) for s in spacing][1:],
                "architecture": architecture_dict(network, patch[1:], n_stages, base_features),
            }
        )
        configurations["2d"] = two_d
    return {
        "dataset_name": DATASET_NAME,
        "plans_name": PLANS_NAME,
        "original_median_spacing_after_transp": [float(s) for s in spacing],
        "original_median_shape_after_transp": [320, 320, 320],
        "image_reader_writer": "Tiff3DIO",
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "configurations": configurations,
        "experiment_planner_used": "nnUNetPlannerResEncM",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {"0": dict(CT_PROPERTIES)},
    }


def make_dataset_json() -> dict[str, Any]:
    """``dataset.json`` of the challenge data converted for nnU-Net (one CT channel, an ignore label)."""
    return {
        "channel_names": {"0": "CT"},
        "labels": {"background": 0, "surface": 1, "ignore": 2},
        "numTraining": 806,
        "file_ending": ".tif",
        "name": "VesuviusSurface",
    }


def build_network(plans: dict[str, Any], config: str, num_classes: int = 2) -> Any:
    """Instantiate the configuration's network (nnU-Net's ``get_network_from_plans``, He init)."""
    import pydoc

    arch = plans["configurations"][config]["architecture"]
    kwargs = dict(arch["arch_kwargs"])
    for key in arch["_kw_requires_import"]:
        if kwargs[key] is not None:
            kwargs[key] = pydoc.locate(kwargs[key])
    network_class = pydoc.locate(arch["network_class_name"])
    network = network_class(input_channels=1, num_classes=num_classes, deep_supervision=True, **kwargs)
    network.apply(network.initialize)
    return network


def _training_log(epochs: int, rng: np.random.Generator) -> dict[str, list[Any]]:
    """The ``logging`` entry: nnU-Net's logger keeps numpy float32/float64 scalars next to floats."""
    dice = [np.float64(v) for v in rng.uniform(0.2, 0.6, epochs)]
    return {
        "mean_fg_dice": dice,
        "ema_fg_dice": [np.float64(v) for v in np.cumsum(dice) / np.arange(1, epochs + 1)],
        "dice_per_class_or_region": [[d] for d in dice],
        "train_losses": [np.float32(v) for v in rng.uniform(-0.6, -0.2, epochs)],
        "val_losses": [np.float32(v) for v in rng.uniform(-0.5, -0.1, epochs)],
        "lrs": [0.01 * (1 - e / 1000) ** 0.9 for e in range(epochs)],
        "epoch_start_timestamps": [1.7e9 + 100.0 * e for e in range(epochs)],
        "epoch_end_timestamps": [1.7e9 + 100.0 * e + 95.0 for e in range(epochs)],
    }


def save_nnunet_checkpoint(
    path: Path, network: Any, *, plans: dict[str, Any], config: str, fold: int | str,
    dataset_json: dict[str, Any], epochs: int = 3, seed: int = 0,
    mirror_axes: Sequence[int] = (0, 1, 2),
) -> None:  # fmt: skip
    """Write a checkpoint dict exactly as ``nnUNetTrainer.save_checkpoint`` does (``torch.save``)."""
    import torch

    rng = np.random.default_rng(seed)
    optimizer = torch.optim.SGD(network.parameters(), 0.01, weight_decay=3e-5, momentum=0.99, nesterov=True)
    log = _training_log(epochs, rng)
    checkpoint = {
        "network_weights": network.state_dict(),
        "optimizer_state": optimizer.state_dict(),
        "grad_scaler_state": None,
        "logging": log,
        "_best_ema": max(log["ema_fg_dice"]),
        "current_epoch": epochs,
        "init_args": {
            "plans": plans,
            "configuration": config,
            "fold": fold,
            "dataset_json": dataset_json,
            "device": torch.device("cuda"),
        },
        "trainer_name": TRAINER,
        "inference_allowed_mirroring_axes": tuple(mirror_axes),
    }
    torch.save(checkpoint, path)


def make_nnunet_model_folder(
    root: str | Path,
    *,
    config: str = "3d_fullres",
    patch_size: Sequence[int] = (32, 32, 32),
    folds: Sequence[int | str] = (0, 1),
    normalization: str = "CTNormalization",
    n_stages: int = 3,
    network: str = "ResidualEncoderUNet",
    base_features: int = 32,
    mirror_axes: Sequence[int] = (0, 1, 2),
    seed: int = 0,
) -> Path:
    """Create ``<root>/Dataset042_VesuviusSurface/nnUNetTrainer__nnUNetResEncUNetMPlans__<config>/``.

    Each fold gets ``checkpoint_final.pth`` and ``checkpoint_best.pth`` with different random weights
    (seeded), so fold ensembling and the checkpoint choice are observable. ``base_features`` (nnU-Net
    plans use 32) can be lowered to keep tests fast; ``mirror_axes`` is what the trainer allows for
    mirroring at inference (nnU-Net's predictor mirrors over exactly these). Returns the model folder.
    """
    import torch

    folder = Path(root) / DATASET_NAME / f"{TRAINER}__{PLANS_NAME}__{config}"
    folder.mkdir(parents=True, exist_ok=True)
    plans = make_plans(config=config, patch_size=patch_size, normalization=normalization, n_stages=n_stages,
                       network=network, base_features=base_features)  # fmt: skip
    dataset_json = make_dataset_json()
    (folder / "plans.json").write_text(json.dumps(plans, indent=4, sort_keys=False))
    (folder / "dataset.json").write_text(json.dumps(dataset_json, indent=4))
    fingerprint = {
        "foreground_intensity_properties_per_channel": plans["foreground_intensity_properties_per_channel"]
    }
    (folder / "dataset_fingerprint.json").write_text(json.dumps(fingerprint))
    for index, fold in enumerate(folds):
        fold_dir = folder / f"fold_{fold}"
        fold_dir.mkdir(exist_ok=True)
        for offset, name in enumerate(("checkpoint_final.pth", "checkpoint_best.pth")):
            torch.manual_seed(seed * 1000 + index * 10 + offset)
            net = build_network(plans, config)
            save_nnunet_checkpoint(
                fold_dir / name, net, plans=plans, config=config, fold=fold, dataset_json=dataset_json,
                seed=seed + index, mirror_axes=mirror_axes,
            )  # fmt: skip
    return folder
