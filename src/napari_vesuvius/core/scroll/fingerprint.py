"""What a full-scroll output was computed with, so a resumed run never mixes two settings.

The fingerprint is plain JSON stored with the output: every model's weights hash (SHA-256 over its
networks' state dicts, so a moved or re-saved checkpoint with the same weights still matches), patch,
normalisation (kind, fixed numbers, z-score over the scanned region or not), classes and ensemble
weight; the sliding-window settings that change values (step, Gaussian, TTA, device and precision as
requested, air skipping); the input (location, shape, dtype); and the output layout (chunks, block
size, pyramid, zarr format). The batch size is left out: it only changes which tiles share a forward
pass.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from napari_vesuvius.core.inference.model_api import InferenceModel, Normalization, WeightedModel


def weights_sha256(model: InferenceModel) -> str:
    """SHA-256 of every network's state dict (names and raw bytes, in a fixed order)."""
    import torch

    digest = hashlib.sha256()
    for network in model.networks:
        digest.update(type(network).__name__.encode())
        for name, tensor in sorted(network.state_dict().items()):
            data = tensor.detach().to("cpu").contiguous()
            digest.update(f"{name}:{data.dtype}:{tuple(data.shape)}".encode())
            digest.update(data.view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def normalization_config(normalization: Normalization) -> dict[str, Any]:
    """The normalisation as configured (class and fields); z-score statistics are fitted per input.

    ``use_mask`` (z-score statistics over the scanned region only) is part of it, so resuming with a
    model normalised differently is refused; it is written only when set, so outputs started before
    it existed (all unmasked) still resume.
    """
    data = {"class": type(normalization).__name__, **normalization.to_dict()}
    if not data.get("use_mask"):
        data.pop("use_mask", None)
    if normalization.fitted_per_volume:
        for key in ("mean", "std", "lower", "upper"):
            data.pop(key, None)
    return data


def as_json(value: Any) -> Any:
    """The value as it reads back from JSON attributes (tuples → lists), for exact comparison."""
    return json.loads(json.dumps(value))


def make_fingerprint(
    members: Sequence[WeightedModel],
    *,
    settings: dict[str, Any],
    input_info: dict[str, Any],
    layout: dict[str, Any],
) -> dict[str, Any]:
    """The fingerprint of a run (JSON-ready; compare with ``==`` to a stored one)."""
    models = [
        {
            "name": m.model.name,
            "weights_sha256": weights_sha256(m.model),
            "networks": len(m.model.networks),
            "weight": float(m.weight),
            "patch_size": list(m.model.patch_size),
            "num_classes": int(m.model.num_classes),
            "surface_class": int(m.model.surface_class),
            "normalization": normalization_config(m.model.normalization),
        }
        for m in members
    ]
    return as_json({"models": models, **settings, "input": input_info, "layout": layout})
