"""Self-describing checkpoints of the built-in U-Net.

A checkpoint is a ``torch.save``'d dict of plain types and tensors only, so it loads with
``torch.load(weights_only=True)`` (no arbitrary unpickling)::

    {"format": "napari-vesuvius-checkpoint", "format_version": 1,
     "architecture": "ResidualEncoderUNet", "config": {...UNetConfig...},
     "state_dict": {name: tensor}, "normalization": {...}, "patch_size": [z, y, x],
     "surface_class": 1, "metadata": {"epochs": ..., "saved_at": ..., ...}}

A network imported from nnU-Net and fine-tuned is stored the same way with ``"architecture":
"nnunet-dynamic"`` and, instead of ``config``, an ``"nnunet"`` dict holding the plans' architecture
entry (``network_class_name``, ``arch_kwargs``, ``_kw_requires_import``), ``in_channels``,
``num_classes`` and ``masked_normalization``; loading rebuilds it with dynamic-network-architectures
(only classes from that package and ``torch.nn``, as for nnU-Net folders).

``normalization.input_range`` records the intensity range of the training data (``[0, 255]`` for
uint8 CT; absent in older checkpoints, which read as ``[0, 255]``): see :mod:`.intensity`. Loading
checks every field for type and range and the weights for NaN/Inf (``_checkpoint_checks``), so a
crafted checkpoint is refused with a :class:`CheckpointError` naming the file and the field.
"""

from __future__ import annotations

import datetime as _dt
import pickle
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from napari_vesuvius.core.atomic import atomic_file
from napari_vesuvius.core.errors import CheckpointError

from . import _checkpoint_checks as checks
from .model_api import InferenceModel, Normalization
from .unet import UNetConfig

FORMAT = "napari-vesuvius-checkpoint"
FORMAT_VERSION = 1
ARCHITECTURE = "ResidualEncoderUNet"
NNUNET_ARCHITECTURE = "nnunet-dynamic"
_PLAIN = (str, int, float, bool, type(None))


@dataclass(frozen=True)
class CheckpointInfo:
    """What a checkpoint describes, without building the network."""

    path: Path
    config: UNetConfig | None
    patch_size: tuple[int, int, int]
    normalization: Normalization
    surface_class: int
    metadata: dict[str, Any] = field(default_factory=dict)
    #: ``ResidualEncoderUNet`` (built-in, ``config`` set) or ``nnunet-dynamic`` (``config`` None).
    architecture: str = ARCHITECTURE
    nnunet: dict[str, Any] | None = None


def _check_plain(value: Any, where: str) -> None:
    """Metadata must be plain data (weights_only loading refuses anything else)."""
    if isinstance(value, _PLAIN):
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"checkpoint metadata {where}: keys must be str, got {key!r}")
            _check_plain(item, f"{where}.{key}")
        return
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
        return
    raise ValueError(
        f"checkpoint metadata {where}: {type(value).__name__} is not plain data "
        "(use str/int/float/bool/None, lists and dicts)"
    )


def save_checkpoint(
    path: str | Path,
    network: Any,
    config: UNetConfig,
    normalization: Normalization,
    patch_size: Sequence[int],
    metadata: Mapping[str, Any] | None = None,
    surface_class: int = 1,
) -> Path:
    """Write a checkpoint atomically (temporary file in the same folder, then ``os.replace``).

    ``metadata`` holds training facts (epochs, date, data, score, ...) as plain data; ``saved_at``
    (UTC ISO time) and the package version are added. Returns the final path.
    """
    from napari_vesuvius import __version__

    path = Path(path)
    config.check_patch_size(patch_size)
    meta = dict(metadata or {})
    meta.setdefault("saved_at", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    meta.setdefault("napari_vesuvius_version", __version__)
    _check_plain(meta, "metadata")
    state = {key: value.detach().cpu().clone() for key, value in network.state_dict().items()}
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "architecture": ARCHITECTURE,
        "config": config.to_dict(),
        "state_dict": state,
        "normalization": normalization.to_dict(),
        "patch_size": [int(p) for p in patch_size],
        "surface_class": int(surface_class),
        "metadata": meta,
    }
    return _write_payload(path, payload)


def save_nnunet_checkpoint(
    path: str | Path,
    network: Any,
    nnunet: Mapping[str, Any],
    normalization: Normalization,
    patch_size: Sequence[int],
    metadata: Mapping[str, Any] | None = None,
    surface_class: int = 1,
) -> Path:
    """Write a (fine-tuned) nnU-Net network atomically; ``nnunet`` needs ``architecture`` (the plans'
    entry), ``num_classes`` and optionally ``in_channels`` and other plain facts (kept as they are)."""
    from napari_vesuvius import __version__

    path = Path(path)
    info = dict(nnunet)
    if not isinstance(info.get("architecture"), Mapping) or "num_classes" not in info:
        raise ValueError("nnunet description needs 'architecture' (from the plans) and 'num_classes'")
    info.setdefault("in_channels", 1)
    info["masked_normalization"] = bool(normalization.use_mask)  # also read by versions before use_mask
    _check_plain(info, "nnunet")
    meta = dict(metadata or {})
    meta.setdefault("saved_at", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    meta.setdefault("napari_vesuvius_version", __version__)
    _check_plain(meta, "metadata")
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "architecture": NNUNET_ARCHITECTURE,
        "nnunet": info,
        "state_dict": {key: value.detach().cpu().clone() for key, value in network.state_dict().items()},
        "normalization": normalization.to_dict(),
        "patch_size": [int(p) for p in patch_size],
        "surface_class": int(surface_class),
        "metadata": meta,
    }
    return _write_payload(path, payload)


def _write_payload(path: Path, payload: dict[str, Any]) -> Path:
    """``torch.save`` to a temporary file in the same folder, fsync, then ``os.replace``."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path, "wb") as handle:
        torch.save(payload, handle)
    return path


def update_checkpoint_metadata(path: str | Path, updates: Mapping[str, Any]) -> Path:
    """Merge plain-data ``updates`` into a checkpoint's metadata, rewriting it atomically.

    The weights and description are copied unchanged; a failure leaves the old file as it was.
    """
    path = Path(path)
    payload = _load_payload(path)
    _info_from_payload(path, payload)  # refuse to rewrite a checkpoint that would not load
    meta = {**dict(payload.get("metadata") or {}), **dict(updates)}
    _check_plain(meta, "metadata")
    payload["metadata"] = meta
    return _write_payload(path, payload)


def _load_payload(path: Path, *, mmap: bool = False) -> dict[str, Any]:
    """``torch.load(weights_only=True)`` with every failure turned into a :class:`CheckpointError`."""
    import torch

    if not path.exists():
        raise CheckpointError(path, "checkpoint file not found")
    if path.is_dir():
        raise CheckpointError(path, "is a folder, not a checkpoint file (nnU-Net folders need plans.json)")
    if path.stat().st_size == 0:
        raise CheckpointError(path, "checkpoint file is empty")
    if not zipfile.is_zipfile(path):
        problem = "corrupt, truncated or not a PyTorch checkpoint (not a torch.save zip archive)"
        raise CheckpointError(path, problem)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as error:
        lines = str(error).strip().splitlines() or [""]
        detail = next((line for line in lines if "GLOBAL" in line or "global" in line), None)
        if detail is None:
            raise CheckpointError(path, f"corrupt or truncated checkpoint ({lines[0][:200]})") from error
        raise CheckpointError(
            path,
            "refused to load: the file contains pickled Python objects that are not plain data "
            f"(weights-only loading rejected it: {detail.strip()[:200]})",
        ) from error
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError, KeyError) as error:
        raise CheckpointError(
            path, f"corrupt, truncated or not a PyTorch checkpoint ({type(error).__name__}: {error})"[:400]
        ) from error
    if not isinstance(payload, dict):
        raise CheckpointError(path, f"not a napari-vesuvius checkpoint (holds a {type(payload).__name__})")
    if payload.get("format") != FORMAT:
        hint = ""
        if "network_weights" in payload:
            hint = "; it looks like an nnU-Net checkpoint: pass the trained model folder (with plans.json)"
        raise CheckpointError(
            path, f"not a napari-vesuvius checkpoint (keys: {sorted(map(str, payload))[:8]}){hint}"
        )
    version = payload.get("format_version", 0)
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise CheckpointError(path, f"field 'format_version' must be a non-negative integer, got {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            path, f"checkpoint format version {payload.get('format_version')} is newer than this plugin's"
        )
    described_by = "nnunet" if payload.get("architecture") == NNUNET_ARCHITECTURE else "config"
    missing = [k for k in (described_by, "state_dict", "normalization", "patch_size") if k not in payload]
    if missing:
        raise CheckpointError(path, f"checkpoint is missing {missing}")
    return payload


def _info_from_payload(path: Path, payload: dict[str, Any]) -> CheckpointInfo:
    """Every description field checked (``_checkpoint_checks``): CheckpointError naming the field."""
    architecture = payload.get("architecture", ARCHITECTURE)
    if architecture == NNUNET_ARCHITECTURE:
        return _nnunet_info(path, payload)
    if architecture != ARCHITECTURE:
        raise CheckpointError(path, f"unknown architecture {architecture!r}"[:300])
    config = checks.unet_config(path, payload["config"])
    patch = checks.patch_size(path, payload["patch_size"])
    try:
        config.check_patch_size(patch)
    except ValueError as error:
        raise CheckpointError(path, f"field 'patch_size': {error}") from None
    return CheckpointInfo(
        path=path,
        config=config,
        patch_size=patch,
        normalization=checks.normalization(path, payload["normalization"]),
        surface_class=checks.surface_class(path, payload.get("surface_class", 1), config.num_classes),
        metadata=checks.metadata(path, payload.get("metadata")),
    )


def _nnunet_info(path: Path, payload: dict[str, Any]) -> CheckpointInfo:
    nnunet = checks.nnunet_fields(path, payload["nnunet"])
    stored = payload["normalization"]
    # saved before the intensity range was recorded: nnU-Net's NoNormalization (scale, mean 0, std 1)
    # takes raw values; RGBTo01Normalization (std 255) expects 0-255 (the default)
    no_normalization = {"kind": "scale", "mean": 0, "std": 1}
    if (
        isinstance(stored, dict)
        and "input_range" not in stored
        and all(stored.get(key) == value for key, value in no_normalization.items())
    ):
        stored = {**stored, "input_range": None}
    normalization = checks.normalization(path, stored)
    if nnunet.get("masked_normalization") and not normalization.use_mask:  # saved before use_mask existed
        try:
            normalization = replace(normalization, use_mask=True)
        except ValueError as error:
            raise CheckpointError(path, f"field 'normalization': {error}") from None
    return CheckpointInfo(
        path=path,
        config=None,
        patch_size=checks.patch_size(path, payload["patch_size"]),
        normalization=normalization,
        surface_class=checks.surface_class(path, payload.get("surface_class", 1), nnunet["num_classes"]),
        metadata=checks.metadata(path, payload.get("metadata")),
        architecture=NNUNET_ARCHITECTURE,
        nnunet=nnunet,
    )


def _build_nnunet_network(path: Path, info: CheckpointInfo) -> Any:
    from .nnunet import build_network, require_dna

    assert info.nnunet is not None
    require_dna()
    return build_network(
        {"architecture": info.nnunet["architecture"]},
        int(info.nnunet.get("in_channels", 1)),
        int(info.nnunet["num_classes"]),
        str(info.nnunet.get("configuration", "fine-tuned")),
        path,
    )


def read_checkpoint_info(path: str | Path) -> CheckpointInfo:
    """Architecture, patch size, normalisation and metadata of a checkpoint (no network built)."""
    path = Path(path)
    return _info_from_payload(path, _load_payload(path, mmap=True))


def load_checkpoint(path: str | Path) -> InferenceModel:
    """Load a checkpoint as an :class:`InferenceModel` (network in eval mode, on CPU).

    Built-in U-Nets and fine-tuned nnU-Net networks (``nnunet-dynamic``) are both accepted.
    """
    from .unet import build_unet

    path = Path(path)
    payload = _load_payload(path)
    info = _info_from_payload(path, payload)
    weights = checks.state_dict(path, payload["state_dict"])
    config = info.config
    if config is not None:
        network = checks.build_matching(path, lambda: build_unet(config), weights)
    else:
        network = checks.build_matching(path, lambda: _build_nnunet_network(path, info), weights)
    network.eval()
    return InferenceModel(
        networks=[network],
        patch_size=info.patch_size,
        normalization=info.normalization,
        num_classes=info.config.num_classes if info.config is not None else int(info.nnunet["num_classes"]),
        surface_class=info.surface_class,
        name=path.stem,
        metadata={
            **info.metadata,
            "source": str(path),
            "kind": "built-in" if info.config is not None else "nnunet-fine-tuned",
        },
    )
