"""``napari-vesuvius init-model`` and ``predict`` on a small TIFF, a zarr output and a dataset folder."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import zarr

from inference_helpers import scan_volume
from napari_vesuvius.cli.main import main
from napari_vesuvius.core.inference.checkpoint import read_checkpoint_info
from napari_vesuvius.core.inference.engine import predict
from napari_vesuvius.core.inference.loading import load_model
from napari_vesuvius.core.inference.settings import parse_tta


@pytest.fixture
def model_path(tmp_path):
    path = tmp_path / "model.pt"
    argv = ["init-model", "--preset", "tiny", "--patch-size", "16", "16", "16", "--output", str(path)]
    assert main(argv) == 0
    return path


def test_init_model_writes_an_honest_untrained_checkpoint(model_path, capsys) -> None:
    info = read_checkpoint_info(model_path)
    assert info.patch_size == (16, 16, 16) and info.metadata["trained"] is False
    assert info.metadata["epochs"] == 0
    assert main(["init-model", "--output", str(model_path)]) == 1  # exists
    other = str(model_path.with_name("x.pt"))
    assert main(["init-model", "--patch-size", "16", "16", "12", "--output", other]) == 1
    assert "multiples" in capsys.readouterr().err


def test_predict_tiff_and_zarr(tmp_path, model_path) -> None:
    volume = scan_volume((20, 24, 18), seed=1, air_below_z=2)
    tifffile.imwrite(tmp_path / "vol.tif", volume, compression="lzw")
    expected = predict(volume, load_model(model_path), device="cpu", precision="fp32",
                       output_dtype="float32").probability  # fmt: skip
    common = ["predict", "--model", str(model_path), "--input", str(tmp_path / "vol.tif"), "--quiet",
              "--device", "cpu", "--precision", "fp32"]  # fmt: skip
    assert main([*common, "--output", str(tmp_path / "p.tif")]) == 0
    written = tifffile.imread(tmp_path / "p.tif")
    assert written.dtype == np.float16 and written.shape == volume.shape
    assert np.abs(written - expected).max() < 1e-3

    assert main([*common, "--output", str(tmp_path / "p.zarr"), "--dtype", "uint8", "--tta", "0"]) == 0
    stored = zarr.open_array(str(tmp_path / "p.zarr"), mode="r")
    assert stored.dtype == np.uint8 and stored.attrs["complete"] is True
    assert stored.attrs["prediction"]["tta_axes"] == [0]
    assert not (tmp_path / ".p.zarr.partial").exists()
    assert main([*common, "--output", str(tmp_path / "p.tif")]) == 1  # exists without --overwrite


def test_predict_dataset_folder(tmp_path, model_path) -> None:
    dataset = tmp_path / "data"
    (dataset / "test_images").mkdir(parents=True)
    for vid in ("7", "12"):
        tifffile.imwrite(dataset / "test_images" / f"{vid}.tif", scan_volume((16, 16, 16), seed=int(vid)))
    out = tmp_path / "pred"
    assert main(["predict", "--model", str(model_path), "--input", str(dataset), "--output", str(out),
                 "--quiet", "--dtype", "uint8"]) == 0  # fmt: skip
    assert sorted(p.name for p in out.iterdir()) == ["12.tif", "7.tif"]
    assert tifffile.imread(out / "7.tif").dtype == np.uint8

    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["predict", "--model", str(model_path), "--input", str(empty), "--output", str(out)]) == 1


def test_parse_tta() -> None:
    assert parse_tta("all") == (0, 1, 2)
    assert parse_tta("none") == ()
    assert parse_tta("2,0") == (0, 2)
    with pytest.raises(Exception, match="axes"):
        parse_tta("0,5")


def test_predict_a_folder_of_ome_zarr_volumes_keeps_their_ids(tmp_path, model_path) -> None:
    """``scan.ome.zarr`` predicts to ``scan.ome.zarr`` / ``scan.tif``, never ``scan.ome.tif``."""
    from napari_vesuvius.core.volume.io import open_volume
    from napari_vesuvius.core.volume.ngff import validate_ome_zarr
    from napari_vesuvius.core.volume.spatial import Spatial
    from napari_vesuvius.core.volume.write import write_volume

    inputs = tmp_path / "scans"
    inputs.mkdir()
    placed = Spatial((7.91, 7.91, 7.91), unit="micrometer")
    for vid in ("a", "b"):
        write_volume(inputs / f"{vid}.ome.zarr", scan_volume((16, 16, 16), seed=len(vid)), spatial=placed)
    common = ["predict", "--model", str(model_path), "--input", str(inputs), "--quiet", "--dtype", "uint8"]
    assert main([*common, "--output", str(tmp_path / "tif")]) == 0
    assert sorted(p.name for p in (tmp_path / "tif").iterdir()) == ["a.tif", "b.tif"]
    assert main([*common, "--output", str(tmp_path / "ome"), "--format", "ome.zarr"]) == 0
    assert sorted(p.name for p in (tmp_path / "ome").iterdir()) == ["a.ome.zarr", "b.ome.zarr"]
    validate_ome_zarr(tmp_path / "ome" / "a.ome.zarr")
    with open_volume(tmp_path / "ome" / "a.ome.zarr") as written:
        assert written.spatial == placed and written.dtype == np.uint8
