"""Validation of a checkpoint's fields before anything is built from them (used by ``checkpoint.py``).

A checkpoint is data from elsewhere (shared models, downloads), so every field is checked for type and
range and refused with a :class:`CheckpointError` naming the file and the field: a crafted checkpoint
gives that error, never a traceback or silent garbage. Bounds are generous for real models and small
enough that a description cannot make the loader allocate without limit:

* ``patch_size``: three integers in 1..1024; ``surface_class``: an integer in ``[0, num_classes)``;
  ``num_classes``: 2..256; ``in_channels``: 1 (single-channel CT);
* ``normalization``: see :class:`~.model_api.Normalization` (known kind, finite numbers, std > 0);
* ``config`` (built-in U-Net): integer fields of the right type within bounds (1..16 stages, 1..4096
  features, 1..64 blocks per stage, kernels 1..15, strides 1..16), ``deep_supervision`` a bool;
* ``state_dict``: string keys and tensors only; floating weights finite (NaN weights give NaN output);
  its names and shapes must be those of the described network, compared on a "meta" network
  (no memory) before the real one is built, so memory stays bounded by the file's own weights.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from napari_vesuvius.core.errors import CheckpointError

from .model_api import Normalization
from .unet import UNetConfig

MAX_PATCH = 1024
MAX_CLASSES = 256
MAX_STAGES = 16
MAX_FEATURES = 4096
MAX_BLOCKS = 64
MAX_KERNEL = 15
MAX_STRIDE = 16


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_int(path: Path, value: Any, name: str, low: int, high: int) -> int:
    """``value`` as an int in ``[low, high]`` or CheckpointError naming the field."""
    if not _is_int(value):
        raise CheckpointError(path, f"field {name!r} must be an integer, got {value!r}"[:300])
    if not low <= value <= high:
        raise CheckpointError(path, f"field {name!r} must be between {low} and {high}, got {value}")
    return int(value)


def patch_size(path: Path, value: Any) -> tuple[int, int, int]:
    if not isinstance(value, list | tuple) or len(value) != 3:
        raise CheckpointError(path, f"field 'patch_size' must be 3 integers [z, y, x], got {value!r}"[:300])
    z, y, x = (check_int(path, v, "patch_size", 1, MAX_PATCH) for v in value)
    return (z, y, x)


def surface_class(path: Path, value: Any, num_classes: int) -> int:
    return check_int(path, value, "surface_class", 0, num_classes - 1)


def normalization(path: Path, value: Any) -> Normalization:
    try:
        return Normalization.from_dict(value)
    except (TypeError, ValueError) as error:
        raise CheckpointError(path, f"field 'normalization': {error}"[:400]) from None


def metadata(path: Path, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(isinstance(key, str) for key in value):
        raise CheckpointError(path, "field 'metadata' must be a dict with string keys")
    return dict(value)


def _int_list(path: Path, value: Any, name: str, high: int, *, triples: bool = False) -> None:
    if not isinstance(value, list | tuple) or len(value) > MAX_STAGES:
        raise CheckpointError(path, f"field 'config.{name}' must be a list of at most {MAX_STAGES} entries")
    for item in value:
        parts = item if triples and isinstance(item, list | tuple) and len(item) == 3 else [item]
        for part in parts:
            check_int(path, part, f"config.{name}", 1, high)


def unet_config(path: Path, value: Any) -> UNetConfig:
    """The built-in U-Net's ``config``: types and bounds first, then :class:`UNetConfig`'s own rules."""
    if not isinstance(value, Mapping):
        raise CheckpointError(path, f"field 'config' must be a dict, got {type(value).__name__}")
    bounds = {
        "in_channels": (1, 1),
        "num_classes": (2, MAX_CLASSES),
        "n_stages": (1, MAX_STAGES),
        "features_base": (1, MAX_FEATURES),
        "features_max": (1, MAX_FEATURES),
    }
    for key, (low, high) in bounds.items():
        if key in value:
            check_int(path, value[key], f"config.{key}", low, high)
    for key, high, triples in (
        ("blocks_per_stage", MAX_BLOCKS, False),
        ("decoder_convs", MAX_BLOCKS, False),
        ("kernel_sizes", MAX_KERNEL, True),
        ("strides", MAX_STRIDE, True),
    ):
        if key in value:
            _int_list(path, value[key], key, high, triples=triples)
    if "deep_supervision" in value and not isinstance(value["deep_supervision"], bool):
        raise CheckpointError(path, "field 'config.deep_supervision' must be true or false")
    slope = value.get("negative_slope", 0.01)
    if isinstance(slope, bool) or not isinstance(slope, int | float) or not 0 <= slope <= 1:
        problem = f"field 'config.negative_slope' must be a number in [0, 1], got {slope!r}"
        raise CheckpointError(path, problem[:300])
    try:
        return UNetConfig.from_dict(value)
    except (TypeError, ValueError) as error:
        raise CheckpointError(path, f"field 'config': {error}"[:400]) from None


def nnunet_fields(path: Path, value: Any) -> dict[str, Any]:
    """The non-network fields of an ``nnunet-dynamic`` description (the classes are checked by
    ``nnunet_classes`` when the network is built)."""
    if not isinstance(value, Mapping) or not isinstance(value.get("architecture"), Mapping):
        raise CheckpointError(path, "field 'nnunet' must be a dict holding the plans' 'architecture' entry")
    if not all(isinstance(key, str) for key in value):
        raise CheckpointError(path, "field 'nnunet' must have string keys")
    info = dict(value)
    info["in_channels"] = check_int(path, info.get("in_channels", 1), "nnunet.in_channels", 1, 1)
    info["num_classes"] = check_int(path, info.get("num_classes"), "nnunet.num_classes", 2, MAX_CLASSES)
    if not isinstance(info.get("masked_normalization", False), bool):
        raise CheckpointError(path, "field 'nnunet.masked_normalization' must be true or false")
    if not isinstance(info.get("configuration", ""), str):
        raise CheckpointError(path, "field 'nnunet.configuration' must be a string")
    return info


def state_dict(path: Path, value: Any) -> dict[str, Any]:
    """String keys, tensors only, finite floating weights."""
    import torch

    if not isinstance(value, Mapping) or not value:
        raise CheckpointError(path, "field 'state_dict' must be a non-empty dict of tensors")
    for name, tensor in value.items():
        if not isinstance(name, str) or not isinstance(tensor, torch.Tensor):
            raise CheckpointError(path, f"field 'state_dict': entry {name!r} is not a named tensor"[:300])
        floating = tensor.is_floating_point() or tensor.is_complex()
        if floating and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(path, f"weights hold NaN or infinite values (state_dict[{name!r}])")
    return dict(value)


def build_matching(path: Path, build: Callable[[], Any], weights: Mapping[str, Any]) -> Any:
    """Build the network with ``build`` and load ``weights`` into it, after checking on a meta-device
    copy (no memory) that the names and shapes match."""
    import torch

    with torch.device("meta"):
        skeleton = build()
    expected = {name: tuple(t.shape) for name, t in skeleton.state_dict().items()}
    del skeleton
    got = {name: tuple(t.shape) for name, t in weights.items()}
    if expected != got:
        missing = sorted(set(expected) - set(got))
        unexpected = sorted(set(got) - set(expected))
        shapes = [n for n in sorted(set(expected) & set(got)) if expected[n] != got[n]]
        parts = [
            f"{label} {names[:3]}{' ...' if len(names) > 3 else ''}"
            for label, names in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes))
            if names
        ]
        raise CheckpointError(path, "weights do not match the stored architecture: " + "; ".join(parts))
    network = build()
    try:
        network.load_state_dict(weights, strict=True)
    except (RuntimeError, TypeError, AttributeError) as error:
        raise CheckpointError(path, f"weights do not match the stored architecture: {error}"[:400]) from error
    return network
