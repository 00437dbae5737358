"""Reading and checking nnU-Net v2 ``plans.json`` / ``dataset.json`` (no torch needed here).

Turns the parts of a trained model folder that describe *what* to run (configuration, labels,
intensity normalisation) into plain values, refusing what the engine cannot reproduce with a
:class:`NnUNetPlansError` that names the file. ``nnunet.py`` builds the networks.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from napari_vesuvius.core.errors import CheckpointError, VesuviusError
from napari_vesuvius.core.inference.model_api import Normalization


class NnUNetPlansError(CheckpointError):
    """An nnU-Net ``plans.json`` / ``dataset.json`` describes a model this plugin cannot run."""


class OptionalDependencyError(VesuviusError, ImportError):
    """An optional dependency needed for the requested feature is not installed."""


# --------------------------------------------------------------------------------------------------
# folder, plans and dataset.json


def read_json(path: Path, folder: Path) -> dict[str, Any]:
    if not path.is_file():
        raise NnUNetPlansError(path, f"missing: {folder} is not an nnU-Net trained model folder")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise NnUNetPlansError(path, f"not valid JSON: {error}") from error
    if not isinstance(data, dict):
        raise NnUNetPlansError(path, "expected a JSON object")
    return data


def check_folder(folder: Path) -> None:
    if not folder.is_dir():
        raise CheckpointError(folder, "nnU-Net model folder not found")
    if (folder / "plans.json").is_file():
        return
    candidates = sorted(p.name for p in folder.iterdir() if (p / "plans.json").is_file())
    hint = (
        f"; choose one of its model folders: {', '.join(candidates)}"
        if candidates
        else "; expected the <Trainer>__<Plans>__<configuration> folder "
        "with plans.json, dataset.json and fold_*/"
    )
    raise CheckpointError(folder, f"no plans.json in this folder{hint}")


def find_folds(folder: str | Path, checkpoint: str = "checkpoint_final.pth") -> list[int | str]:
    """The folds of a model folder that hold ``checkpoint`` (``fold_0``… then ``fold_all``)."""
    folder = Path(folder)
    found: list[int | str] = []
    for path in folder.glob("fold_*"):
        suffix = path.name[len("fold_") :]
        if not (path / checkpoint).is_file():
            continue
        if suffix.isdigit():
            found.append(int(suffix))
        elif suffix == "all":
            found.append("all")
    return sorted(found, key=lambda f: (isinstance(f, str), f if isinstance(f, int) else 0))


def skipped_folds(folder: str | Path, checkpoint: str = "checkpoint_final.pth") -> list[str]:
    """Why each ``fold_*`` entry that :func:`find_folds` leaves out is left out (one phrase each)."""
    folder = Path(folder)
    reasons: list[str] = []
    for path in sorted(folder.glob("fold_*")):
        suffix = path.name[len("fold_") :]
        if not path.is_dir():
            reasons.append(f"{path.name} is not a folder")
        elif not (suffix.isdigit() or suffix == "all"):
            reasons.append(f"{path.name} is not a fold name (fold_<number> or fold_all)")
        elif not (path / checkpoint).is_file():
            others = sorted(p.name for p in path.glob("checkpoint*.pth"))
            has = f" (it has {', '.join(others)})" if others else ""
            reasons.append(f"{path.name} has no {checkpoint}{has}")
    return reasons


def configuration_from_folder_name(folder: Path) -> str | None:
    parts = folder.name.split("__")
    return parts[2] if len(parts) == 3 and parts[2] else None


def resolve_configuration(plans: dict[str, Any], name: str, plans_path: Path) -> dict[str, Any]:
    """The configuration dict with ``inherits_from`` resolved (as nnU-Net's ``PlansManager``)."""
    configurations = plans.get("configurations")
    if not isinstance(configurations, dict):
        raise NnUNetPlansError(plans_path, "has no 'configurations' object")
    chain: list[str] = []
    current: str | None = name
    merged: dict[str, Any] = {}
    while current is not None:
        if current not in configurations:
            raise NnUNetPlansError(
                plans_path,
                f"configuration {current!r} not found; available: {', '.join(configurations)}",
            )
        if current in chain:
            raise NnUNetPlansError(plans_path, f"circular 'inherits_from' between configurations {chain}")
        chain.append(current)
        config = configurations[current]
        merged = {**config, **merged}
        current = config.get("inherits_from")
    return merged


def check_configuration(config: dict[str, Any], name: str, plans: dict[str, Any], plans_path: Path) -> None:
    patch = config.get("patch_size")
    if not isinstance(patch, list) or not all(isinstance(p, int) and p > 0 for p in patch):
        raise NnUNetPlansError(plans_path, f"configuration {name!r} has no valid patch_size")
    if len(patch) != 3:
        raise NnUNetPlansError(
            plans_path, f"configuration {name!r} is {len(patch)}D; only 3D configurations are supported"
        )
    if config.get("previous_stage"):
        raise NnUNetPlansError(
            plans_path,
            f"configuration {name!r} is a cascade stage (needs the segmentation of "
            f"{config['previous_stage']!r} as input); cascades are not supported",
        )
    if "architecture" not in config:
        raise NnUNetPlansError(
            plans_path,
            f"configuration {name!r} uses the pre-2.4 plans format (no 'architecture'); "
            "re-run nnUNetv2_plan_experiment or update the plans",
        )
    spacing = config.get("spacing")
    median = plans.get("original_median_spacing_after_transp")
    comparable = isinstance(spacing, list) and isinstance(median, list) and len(median) == len(spacing)
    if comparable and not np.allclose(spacing, median, rtol=1e-3, atol=1e-6):
        raise NnUNetPlansError(
            plans_path,
            f"configuration {name!r} resamples images to spacing {spacing} (the data's median spacing "
            f"is {median}); napari-vesuvius runs models at the volume's native resolution, so only "
            "configurations without resampling (e.g. 3d_fullres) are supported",
        )


def num_classes_from_labels(dataset: dict[str, Any], dataset_path: Path) -> tuple[int, int]:
    """(softmax channels, surface class) from ``labels``: the ignore label is not a class."""
    labels = dataset.get("labels")
    if not isinstance(labels, dict) or not labels:
        raise NnUNetPlansError(dataset_path, "has no 'labels' object")
    if dataset.get("regions_class_order") is not None or any(
        isinstance(v, list | tuple) for v in labels.values()
    ):
        raise NnUNetPlansError(
            dataset_path, "region-based training (sigmoid outputs) is not supported; labels must be integers"
        )
    values = {key: value for key, value in labels.items() if key != "ignore"}
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in labels.values()):
        raise NnUNetPlansError(dataset_path, f"label values must be integers, got {labels}")
    if sorted(values.values()) != list(range(len(values))):
        raise NnUNetPlansError(dataset_path, f"labels must be consecutive from 0, got {values}")
    if "ignore" in labels and labels["ignore"] <= max(values.values()):
        raise NnUNetPlansError(dataset_path, "the ignore label must have the highest value (nnU-Net rule)")
    if len(values) < 2:
        raise NnUNetPlansError(dataset_path, "needs a background and at least one foreground label")
    named = [v for k, v in values.items() if k.casefold() == "surface"]
    return len(values), named[0] if named else 1


def num_input_channels(dataset: dict[str, Any], dataset_path: Path) -> int:
    channels = dataset.get("channel_names", dataset.get("modality"))
    if not isinstance(channels, dict) or not channels:
        raise NnUNetPlansError(dataset_path, "has no 'channel_names' object")
    return len(channels)


def normalization_from_plans(
    config: dict[str, Any], plans: dict[str, Any], name: str, plans_path: Path
) -> Normalization:
    schemes = config.get("normalization_schemes") or []
    if len(schemes) != 1:
        raise NnUNetPlansError(
            plans_path,
            f"configuration {name!r} has {len(schemes)} normalization schemes; expected 1 (one channel)",
        )
    scheme = schemes[0]
    use_mask = bool((config.get("use_mask_for_norm") or [False])[0])
    if scheme == "CTNormalization":
        props_all = plans.get(
            "foreground_intensity_properties_per_channel",
            plans.get("foreground_intensity_properties_by_modality"),
        )
        props = props_all.get("0") if isinstance(props_all, dict) else None
        keys = ("mean", "std", "percentile_00_5", "percentile_99_5")
        if not isinstance(props, dict) or not all(isinstance(props.get(k), int | float) for k in keys):
            raise NnUNetPlansError(
                plans_path,
                "CTNormalization needs foreground_intensity_properties_per_channel['0'] with "
                f"{', '.join(keys)}",
            )
        try:  # Normalization refuses std <= 0, non-finite numbers and lower > upper
            return Normalization(
                kind="ct",
                mean=props["mean"],
                std=props["std"],
                lower=props["percentile_00_5"],
                upper=props["percentile_99_5"],
            )
        except ValueError as error:
            raise NnUNetPlansError(
                plans_path, f"foreground_intensity_properties_per_channel['0']: {error}"
            ) from None
    if scheme == "ZScoreNormalization":  # use_mask_for_norm: statistics inside the scanned region
        return Normalization(kind="zscore", mean=0.0, std=1.0, input_range=None, use_mask=use_mask)
    if scheme == "NoNormalization":
        return Normalization(kind="scale", mean=0.0, std=1.0, input_range=None)  # raw values, any dtype
    if scheme == "RGBTo01Normalization":
        return Normalization(kind="scale", mean=0.0, std=255.0)
    raise NnUNetPlansError(
        plans_path,
        f"normalization scheme {scheme!r} is not supported (supported: CTNormalization, "
        "ZScoreNormalization, NoNormalization, RGBTo01Normalization)",
    )


def training_intensity_from_plans(plans: dict[str, Any]) -> dict[str, Any]:
    """``{"training_intensity": ...}``: the plans' channel-0 foreground intensity properties (labelled
    voxels of the training data) for the out-of-distribution check (:mod:`.ood`), or ``{}`` when the
    plans lack them or they are ill-formed (the check is then skipped; loading does not fail)."""
    from .ood import NNUNET_SOURCE, IntensityProfile

    key = "foreground_intensity_properties_per_channel"
    props_all = plans.get(key, plans.get("foreground_intensity_properties_by_modality"))
    props = props_all.get("0") if isinstance(props_all, dict) else None
    if not isinstance(props, dict):
        return {}
    try:
        profile = IntensityProfile.from_dict({**props, "source": NNUNET_SOURCE})
    except ValueError:
        return {}
    return {"training_intensity": profile.to_dict()}
