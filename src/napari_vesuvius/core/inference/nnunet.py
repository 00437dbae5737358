"""Import nnU-Net v2 trained-model folders as :class:`InferenceModel`.

A trained model folder is ``<results>/<DatasetXXX_Name>/<Trainer>__<Plans>__<config>/`` holding
``plans.json``, ``dataset.json`` and ``fold_<k>/checkpoint_{final,best}.pth``. The network is rebuilt
from the plans with ``dynamic-network-architectures`` (optional extra ``napari-vesuvius[nnunet]``);
class names in the plans are looked up in an explicit allow-list (``nnunet_classes``), never imported;
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

from napari_vesuvius.core.errors import CheckpointError, warn_user
from napari_vesuvius.core.inference import _checkpoint_checks as checks
from napari_vesuvius.core.inference._nnunet_plans import (
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
    skipped_folds,
    training_intensity_from_plans,
)
from napari_vesuvius.core.inference.model_api import InferenceModel
from napari_vesuvius.core.inference.nnunet_classes import network_class, resolve_arch_kwargs

if TYPE_CHECKING:
    import torch

__all__ = [
    "NnUNetPlansError",
    "OptionalDependencyError",
    "build_network",
    "find_folds",
    "load_nnunet_model",
    "require_dna",
]

_INSTALL_HINT = "pip install 'napari-vesuvius[nnunet]'"


# --------------------------------------------------------------------------------------------------
# network construction


def require_dna() -> None:
    """Raise :class:`OptionalDependencyError` when dynamic-network-architectures is not installed."""
    try:
        importlib.import_module("dynamic_network_architectures")
    except ImportError as error:
        raise OptionalDependencyError(
            "loading nnU-Net models needs the 'dynamic-network-architectures' package: " + _INSTALL_HINT
        ) from error


def _check_network_arguments(cls: type, kwargs: dict[str, Any], plans_path: Path) -> None:
    """Refuse ``arch_kwargs`` the network class does not take, before constructing it."""
    import inspect

    parameters = inspect.signature(cls.__init__).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    unknown = sorted(set(kwargs) - set(parameters))
    if unknown:
        raise NnUNetPlansError(
            plans_path, f"arch_kwargs: {cls.__name__} takes no argument(s) {', '.join(unknown)}"
        )


def resolve_architecture(config: dict[str, Any], name: str, plans_path: Path) -> tuple[type, dict[str, Any]]:
    """The network class and its keyword arguments, every class name through the allow-list.

    All of ``architecture`` is validated (``nnunet_classes``) here, before anything is constructed.
    """
    arch = config.get("architecture")
    if not isinstance(arch, dict):
        raise NnUNetPlansError(plans_path, f"configuration {name!r}: 'architecture' must be an object")
    cls = network_class(arch.get("network_class_name"), plans_path)
    kwargs = resolve_arch_kwargs(arch, plans_path)
    kwargs["deep_supervision"] = False
    _check_network_arguments(cls, {"input_channels": 1, "num_classes": 1, **kwargs}, plans_path)
    return cls, kwargs


def build_network(
    config: dict[str, Any], in_channels: int, num_classes: int, name: str, plans_path: Path
) -> torch.nn.Module:
    """Build the network a plans configuration describes (see :func:`resolve_architecture`)."""
    cls, kwargs = resolve_architecture(config, name, plans_path)
    try:
        return cls(input_channels=in_channels, num_classes=num_classes, **kwargs)
    except (TypeError, ValueError, AssertionError, RuntimeError, IndexError, KeyError) as error:
        raise NnUNetPlansError(
            plans_path, f"cannot build {cls.__name__} from arch_kwargs: {error}"[:500]
        ) from error


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
    require_dna()
    from napari_vesuvius.core.inference._safe_unpickle import load_nnunet_checkpoint

    available = find_folds(folder, checkpoint)
    if folds is None:
        skipped = skipped_folds(folder, checkpoint)
        if not available:
            why = f" ({'; '.join(skipped)})" if skipped else ""
            raise CheckpointError(folder, f"no fold_*/{checkpoint} found in this model folder{why}")
        chosen: list[int | str] = list(available)
        if skipped:
            warn_user(
                folder,
                f"left out: {'; '.join(skipped)}; ensembling fold(s) {', '.join(map(str, chosen))}",
            )
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
    resolve_architecture(config, name, plans_path)  # refuse a bad plans file before reading weights
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
        weights = payload.get("network_weights")
        if not isinstance(weights, dict):
            raise CheckpointError(path, "not an nnU-Net checkpoint: 'network_weights' is missing")
        weights = checks.state_dict(path, _clean_state_dict(weights))  # tensors only, all finite
        network = checks.build_matching(  # shapes compared on a memory-free meta build first
            path, lambda: build_network(config, in_channels, num_classes, name, plans_path), weights
        )
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
            **training_intensity_from_plans(plans),
        },
    )
