"""Import nnU-Net v2 trained-model folders as :class:`InferenceModel`.

A trained model folder is ``<results>/<DatasetXXX_Name>/<Trainer>__<Plans>__<config>/`` holding
``plans.json``, ``dataset.json`` and ``fold_<k>/checkpoint_{final,best}.pth``. The network is rebuilt
from the plans with ``dynamic-network-architectures`` (optional extra ``napari-vesuvius[nnunet]``);
names in the plans are resolved only inside ``dynamic_network_architectures`` and ``torch.nn``;
checkpoints are read with ``torch.load(weights_only=True)`` (see ``_safe_unpickle``).

Assumptions, checked with a clear error when they fail:
* 3D, single input channel, softmax outputs (no region-based training), not a cascade stage.
* The configuration's spacing equals the dataset's median spacing, i.e. nnU-Net does not resample
  the images (true for ``3d_fullres`` on the isotropic challenge data); the engine runs at the
  volume's native resolution and assumes the input has the spacing the model was trained on.
* Normalisation: ``CTNormalization``, ``ZScoreNormalization`` (per image, optionally over the
  non-zero voxels), ``NoNormalization`` and ``RGBTo01Normalization``; others are refused.
* nnU-Net crops images to their non-zero bounding box before predicting and calls everything outside
  background; the engine forces air to 0 instead, which agrees wherever the CT is non-zero.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_vesuvius.core.errors import CheckpointError
from napari_vesuvius.core.inference._nnunet_plans import (
    MaskedZScoreNormalization,
    NnUNetPlansError,
    OptionalDependencyError,
    check_configuration,
    check_folder,
    configuration_from_folder_name,
    find_folds,
    normalization_from_plans,
    num_classes_from_labels,
    num_input_channels,
    read_json,
    resolve_configuration,
)
from napari_vesuvius.core.inference.model_api import InferenceModel

if TYPE_CHECKING:
    import torch

__all__ = [
    "MaskedZScoreNormalization",
    "NnUNetPlansError",
    "OptionalDependencyError",
    "find_folds",
    "load_nnunet_model",
]

_ALLOWED_IMPORT_ROOTS = ("dynamic_network_architectures", "torch.nn")
_INSTALL_HINT = "pip install 'napari-vesuvius[nnunet]'"


# --------------------------------------------------------------------------------------------------
# network construction


def _require_dna() -> None:
    try:
        importlib.import_module("dynamic_network_architectures")
    except ImportError as error:
        raise OptionalDependencyError(
            "loading nnU-Net models needs the 'dynamic-network-architectures' package: " + _INSTALL_HINT
        ) from error


def _resolve_name(dotted: Any, plans_path: Path, what: str) -> type:
    """Import a class named in the plans, only from ``dynamic_network_architectures`` or ``torch.nn``."""
    if not isinstance(dotted, str) or not all(part.isidentifier() for part in dotted.split(".")):
        raise NnUNetPlansError(plans_path, f"{what}: invalid class name {dotted!r}")
    if not any(dotted == root or dotted.startswith(root + ".") for root in _ALLOWED_IMPORT_ROOTS):
        raise NnUNetPlansError(
            plans_path,
            f"{what}: refusing to import {dotted!r}; only classes from "
            f"{' and '.join(_ALLOWED_IMPORT_ROOTS)} may be named in the plans",
        )
    parts = dotted.split(".")
    for split in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:split])
        try:
            obj: Any = importlib.import_module(module_name)
        except ImportError:
            continue
        try:
            for attr in parts[split:]:
                obj = getattr(obj, attr)
        except AttributeError:
            break
        if isinstance(obj, type):
            return obj
        break
    raise NnUNetPlansError(plans_path, f"{what}: cannot find class {dotted!r}")


def _network_class(dotted: Any, plans_path: Path) -> type:
    """The network class; like nnU-Net, fall back to a class of that name in d-n-a's architectures."""
    import torch

    try:
        cls = _resolve_name(dotted, plans_path, "network_class_name")
    except NnUNetPlansError:
        if not isinstance(dotted, str) or not dotted.startswith("dynamic_network_architectures."):
            raise
        import pkgutil

        import dynamic_network_architectures.architectures as archs

        wanted = dotted.rsplit(".", 1)[-1]
        cls = None
        for info in pkgutil.iter_modules(archs.__path__):
            try:  # some architectures need extras (timm, ...): skip those modules
                module = importlib.import_module(f"{archs.__name__}.{info.name}")
            except ImportError:
                continue
            candidate = getattr(module, wanted, None)
            if isinstance(candidate, type):
                cls = candidate
                break
        if cls is None:
            raise
    if not issubclass(cls, torch.nn.Module):
        raise NnUNetPlansError(plans_path, f"network_class_name {dotted!r} is not a torch.nn.Module")
    return cls


def _build_network(
    config: dict[str, Any], in_channels: int, num_classes: int, name: str, plans_path: Path
) -> torch.nn.Module:
    arch = config["architecture"]
    if not isinstance(arch, dict) or not isinstance(arch.get("arch_kwargs"), dict):
        raise NnUNetPlansError(plans_path, f"configuration {name!r}: 'architecture' lacks arch_kwargs")
    kwargs = dict(arch["arch_kwargs"])
    for key in arch.get("_kw_requires_import", []):
        if kwargs.get(key) is not None:
            kwargs[key] = _resolve_name(kwargs[key], plans_path, f"arch_kwargs[{key!r}]")
    cls = _network_class(arch.get("network_class_name"), plans_path)
    kwargs["deep_supervision"] = False
    try:
        network = cls(input_channels=in_channels, num_classes=num_classes, **kwargs)
    except (TypeError, ValueError, AssertionError, RuntimeError) as error:
        raise NnUNetPlansError(
            plans_path, f"cannot build {arch.get('network_class_name')} from arch_kwargs: {error}"[:500]
        ) from error
    return network


def _clean_state_dict(weights: dict[str, Any]) -> dict[str, Any]:
    """Strip DDP (``module.``) and ``torch.compile`` (``_orig_mod.``) prefixes, as nnU-Net does."""
    out = {}
    for key, value in weights.items():
        for prefix in ("module.", "_orig_mod."):
            if key.startswith(prefix):
                key = key[len(prefix) :]
        out[key] = value
    return out


def _transposed(network: torch.nn.Module, forward: Sequence[int]) -> torch.nn.Module:
    """Wrap a network trained on axis-transposed images so it takes tiles in the volume's axis order."""
    import torch

    class _TransposedNetwork(torch.nn.Module):
        """Permute (Z, Y, X) tiles into the plans' ``transpose_forward`` order and the logits back."""

        def __init__(self, inner: torch.nn.Module, order: Sequence[int]) -> None:
            super().__init__()
            self.inner = inner
            self.forward_order = (0, 1, *(2 + int(a) for a in order))
            backward = np.argsort(np.asarray(order))
            self.backward_order = (0, 1, *(2 + int(a) for a in backward))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.inner(x.permute(*self.forward_order))
            return y.permute(*self.backward_order)

    return _TransposedNetwork(network, forward).eval()


# --------------------------------------------------------------------------------------------------
# public entry point


def load_nnunet_model(
    folder: str | Path,
    folds: Sequence[int | str] | None = None,
    checkpoint: str = "checkpoint_final.pth",
    configuration: str | None = None,
) -> InferenceModel:
    """Load an nnU-Net v2 trained model folder (all ``fold_*`` unless ``folds`` narrows them).

    The folds become the networks of one :class:`InferenceModel` (logits averaged, as nnU-Net does);
    patch size and normalisation come from the plans; ``surface_class`` is label 1 (or the label
    named ``surface``). ``configuration`` defaults to the one in the folder name
    (``<Trainer>__<Plans>__<configuration>``), else the one stored in the checkpoint.
    """
    folder = Path(folder).expanduser()
    check_folder(folder)
    plans_path, dataset_path = folder / "plans.json", folder / "dataset.json"
    plans = read_json(plans_path, folder)
    dataset = read_json(dataset_path, folder)
    _require_dna()
    from napari_vesuvius.core.inference._safe_unpickle import load_nnunet_checkpoint

    available = find_folds(folder, checkpoint)
    if folds is None:
        if not available:
            raise CheckpointError(folder, f"no fold_*/{checkpoint} found in this model folder")
        chosen: list[int | str] = list(available)
    else:
        try:
            chosen = [f if f == "all" else int(f) for f in folds]
        except (TypeError, ValueError) as error:
            raise CheckpointError(folder, f"folds must be integers or 'all', got {list(folds)}") from error
        if not chosen:
            raise CheckpointError(folder, "no folds selected")
        missing = [f for f in chosen if (folder / f"fold_{f}" / checkpoint).is_file() is False]
        if missing:
            have = ", ".join(str(f) for f in available) or "none"
            raise CheckpointError(
                folder,
                f"fold(s) {', '.join(str(f) for f in missing)} have no {checkpoint} (folds with it: {have})",
            )

    payloads = [(fold, folder / f"fold_{fold}" / checkpoint) for fold in chosen]
    name = configuration or configuration_from_folder_name(folder)
    first: dict[str, Any] | None = None
    if name is None:  # an unusual folder name: the checkpoint knows its configuration
        first = load_nnunet_checkpoint(payloads[0][1])
        name = (first.get("init_args") or {}).get("configuration")
    if not isinstance(name, str):
        raise NnUNetPlansError(plans_path, "cannot tell which configuration to use; pass configuration=")
    config = resolve_configuration(plans, name, plans_path)
    check_configuration(config, name, plans, plans_path)
    in_channels = num_input_channels(dataset, dataset_path)
    if in_channels != 1:
        raise NnUNetPlansError(
            dataset_path, f"the model takes {in_channels} input channels; only single-channel CT is supported"
        )
    num_classes, surface_class = num_classes_from_labels(dataset, dataset_path)
    normalization = normalization_from_plans(config, plans, name, plans_path)
    forward = [int(a) for a in plans.get("transpose_forward", [0, 1, 2])]
    if sorted(forward) != [0, 1, 2]:
        raise NnUNetPlansError(plans_path, f"invalid transpose_forward {forward}")

    networks = []
    mirroring = None
    trainer = ""
    for index, (_fold, path) in enumerate(payloads):
        payload = first if index == 0 and first is not None else load_nnunet_checkpoint(path)
        if index == 0:
            first = payload
        trained_for = (payload.get("init_args") or {}).get("configuration")
        if trained_for not in (None, name):
            raise CheckpointError(path, f"was trained for configuration {trained_for!r}, not {name!r}")
        if index == 0:
            mirroring = payload.get("inference_allowed_mirroring_axes")
            trainer = str(payload.get("trainer_name", folder.name.split("__")[0]))
        network = _build_network(config, in_channels, num_classes, name, plans_path)
        try:
            network.load_state_dict(_clean_state_dict(payload["network_weights"]), strict=True)
        except (RuntimeError, KeyError, TypeError) as error:
            raise CheckpointError(
                path, f"weights do not match the network built from {plans_path.name}: {error}"[:600]
            ) from error
        network.eval()
        networks.append(network if forward == [0, 1, 2] else _transposed(network, forward))

    patch_network_order = [int(p) for p in config["patch_size"]]
    patch = tuple(patch_network_order[int(a)] for a in np.argsort(forward))
    allowed_axes = None
    if mirroring is not None:
        allowed_axes = tuple(sorted(forward[int(a)] for a in mirroring))
    return InferenceModel(
        networks=networks,
        patch_size=(patch[0], patch[1], patch[2]),
        normalization=normalization,
        num_classes=num_classes,
        surface_class=surface_class,
        name=f"{plans.get('dataset_name', folder.parent.name)}/{folder.name} "
        f"folds {','.join(map(str, chosen))}",
        metadata={
            "source": "nnunetv2",
            "folder": str(folder),
            "configuration": name,
            "folds": list(chosen),
            "checkpoint": checkpoint,
            "trainer_name": trainer,
            "plans_name": plans.get("plans_name"),
            "dataset_name": plans.get("dataset_name"),
            "spacing": config.get("spacing"),
            "normalization_scheme": config["normalization_schemes"][0],
            "allowed_mirroring_axes": allowed_axes,
            "transpose_forward": forward,
            "network_class_name": config["architecture"].get("network_class_name"),
        },
    )
