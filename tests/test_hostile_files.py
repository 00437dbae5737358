"""Files that try to run code when read: pickled zarr chunks and pickled checkpoints.

A zarr array may name a ``pickle`` codec in its metadata, and a ``.pt``/``.pth`` file is a pickle;
both are refused before any chunk or object is unpickled. Each test plants a payload that would
create a marker file, and asserts the refusal names the file and the marker never appears.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest

from napari_vesuvius.core.errors import CheckpointError, VolumeError
from napari_vesuvius.core.volume.io import open_volume


class _Payload:
    """Unpickling this runs a shell command that creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {self.marker}",))


def _zarr_v2_with(
    folder: Path, dtype: str, compressor: dict | None, filters: list | None, chunk: bytes
) -> Path:
    folder.mkdir()
    meta = {
        "zarr_format": 2,
        "shape": [4, 4, 4],
        "chunks": [4, 4, 4],
        "dtype": dtype,
        "compressor": compressor,
        "filters": filters,
        "fill_value": 0,
        "order": "C",
    }
    (folder / ".zarray").write_text(json.dumps(meta))
    (folder / "0.0.0").write_bytes(chunk)
    return folder


@pytest.mark.parametrize(
    ("dtype", "compressor", "filters"),
    [("|u1", {"id": "pickle"}, None), ("|O", None, [{"id": "pickle"}])],
    ids=["pickle compressor", "object dtype with pickle filter"],
)
def test_zarr_with_pickle_codec_is_refused(tmp_path: Path, dtype: str, compressor, filters) -> None:
    marker = tmp_path / "pwned"
    store = _zarr_v2_with(tmp_path / "evil.zarr", dtype, compressor, filters, pickle.dumps(_Payload(marker)))
    with pytest.raises(VolumeError) as info, open_volume(store) as volume:
        volume.data.compute()
    assert str(info.value).startswith(str(store))
    assert not marker.exists()


def test_pickled_checkpoint_is_refused(tmp_path: Path) -> None:
    """A torch.save'd file holding a pickled callable is refused by the weights-only loader."""
    torch = pytest.importorskip("torch")
    from napari_vesuvius.core.inference.loading import load_model

    marker = tmp_path / "pwned"
    path = tmp_path / "model.pt"
    torch.save({"format": "napari-vesuvius-checkpoint", "state_dict": _Payload(marker)}, path)
    with pytest.raises(CheckpointError) as info:
        load_model(path)
    assert str(info.value).startswith(str(path))
    assert not marker.exists()
