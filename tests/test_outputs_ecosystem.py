"""Every writer path gives outputs the ecosystem reads, placed like their input.

Plain ``.zarr`` outputs open through zarr's v2 API by default (``--zarr-format 3``: v3); every ``.ome.zarr``
output is a validated OME-Zarr pyramid (0.4 on zarr v2, 0.5 on v3); an input with 7.91 µm voxels gives
outputs with 7.91 µm voxels (read back with ``open_volume(...).spatial``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr

from inference_helpers import scan_volume
from napari_vesuvius.cli.main import main
from napari_vesuvius.core.volume import ngff
from napari_vesuvius.core.volume.io import open_volume
from napari_vesuvius.core.volume.spatial import SPATIAL_ATTR, Spatial
from napari_vesuvius.core.volume.write import write_ome_zarr, write_volume

SCROLL = Spatial((7.91, 7.91, 7.91), (3.0, 0.0, -1.5), "micrometer")


def assert_plain(path: Path, zarr_format: int = 2, spatial: Spatial = SCROLL) -> zarr.Array:
    """A plain zarr array of that format, placed by ``spatial``."""
    array = zarr.open_array(str(path), mode="r", zarr_format=zarr_format)
    assert array.metadata.zarr_format == zarr_format
    with open_volume(path) as volume:
        assert volume.kind == "zarr" and volume.spatial == spatial
    return array


def assert_ome(path: Path, zarr_format: int = 2, spatial: Spatial = SCROLL, min_levels: int = 2) -> list:
    """A valid OME-Zarr (0.4 on v2, 0.5 on v3) with a pyramid, level 0 placed by ``spatial``."""
    ngff.validate_ome_zarr(path)
    group = zarr.open_group(str(path), mode="r", zarr_format=zarr_format)
    attrs = dict(group.attrs)
    version = attrs["multiscales"][0]["version"] if zarr_format == 2 else attrs["ome"]["version"]
    assert version == {2: "0.4", 3: "0.5"}[zarr_format]
    with open_volume(path) as volume:
        assert volume.kind == "ome-zarr" and len(volume.levels) >= min_levels
        assert volume.spatial == spatial
        levels = [np.asarray(level) for level in volume.levels]
    return levels


@pytest.fixture
def model_path(tmp_path: Path) -> Path:
    path = tmp_path / "model.pt"
    argv = ["init-model", "--preset", "tiny", "--patch-size", "16", "16", "16", "--output", str(path)]
    assert main(argv) == 0
    return path


@pytest.fixture
def scroll_input(tmp_path: Path) -> Path:
    """A small OME-Zarr CT declaring 7.91 µm voxels; x is longer than a float16 output chunk (96)."""
    path = tmp_path / "ct.ome.zarr"
    write_ome_zarr(path, scan_volume((12, 16, 112), seed=4), spatial=SCROLL)
    return path


# ------------------------------------------------------------------------------------- write_volume
@pytest.mark.parametrize("zarr_format", [2, 3])
def test_write_volume_plain_zarr_format_and_placement(tmp_path: Path, zarr_format: int) -> None:
    data = np.arange(4 * 5 * 6, dtype=np.uint16).reshape(4, 5, 6)
    path = write_volume(tmp_path / "v.zarr", data, zarr_format=zarr_format, spatial=SCROLL)
    array = assert_plain(path, zarr_format)
    np.testing.assert_array_equal(array[:], data)
    assert array.attrs[SPATIAL_ATTR]["unit"] == "micrometer"
    default = write_volume(tmp_path / "d.zarr", data)  # nothing known: nothing recorded
    assert SPATIAL_ATTR not in assert_plain(default, 2, Spatial()).attrs


def test_write_volume_refuses_an_unknown_zarr_format(tmp_path: Path) -> None:
    from napari_vesuvius.core.errors import VolumeError

    with pytest.raises(VolumeError, match="zarr format must be 2 or 3"):
        write_volume(tmp_path / "v.zarr", np.zeros((2, 2, 2), np.uint8), zarr_format=4)
    assert not (tmp_path / "v.zarr").exists()


# ------------------------------------------------------------------------------ predict (in memory)
@pytest.mark.parametrize(
    ("name", "zarr_format"),
    [("p.zarr", 2), ("p3.zarr", 3), ("p.ome.zarr", 2), ("p3.ome.zarr", 3), ("p.tif", 2)],
)
def test_predict_in_memory_outputs(
    tmp_path: Path, model_path: Path, scroll_input: Path, name: str, zarr_format: int
) -> None:
    output = tmp_path / name
    argv = ["predict", "--model", str(model_path), "--input", str(scroll_input), "--output", str(output),
            "--quiet", "--device", "cpu", "--precision", "fp32", "--tta", "0",
            "--zarr-format", str(zarr_format)]  # fmt: skip
    assert main(argv) == 0
    if name.endswith(".ome.zarr"):
        levels = assert_ome(output, zarr_format)
        assert levels[1].shape == (6, 8, 56) and levels[1].dtype == np.float16
        data = levels[0]
    elif name.endswith(".zarr"):
        data = assert_plain(output, zarr_format)[:]
    else:
        with open_volume(output) as volume:
            assert volume.spatial == SCROLL
            data = np.asarray(volume.data)
    assert data.dtype == np.float16 and data.shape == (12, 16, 112) and 0 < data.max() <= 1
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no partial store left


def test_prediction_output_publishes_the_ome_zarr_level_0(tmp_path: Path) -> None:
    from napari_vesuvius.core.inference.outputs import create_prediction_output

    target = tmp_path / "p.ome.zarr"
    with create_prediction_output(target, (4, 8, 200), "uint8", spatial=SCROLL) as pending:
        pending.array[:] = 7
        pending.publish()
    published = pending.open_published()
    assert published.shape == (4, 8, 200) and int(published[0, 0, 0]) == 7
    assert [level.shape for level in assert_ome(target)] == [(4, 8, 200), (2, 4, 100)]


# -------------------------------------------------------------------------------------- postprocess
@pytest.mark.parametrize(("name", "zarr_format"), [("m.zarr", 2), ("m.ome.zarr", 2), ("m3.ome.zarr", 3)])
def test_postprocess_masks_keep_the_placement(tmp_path: Path, name: str, zarr_format: int) -> None:
    prob = np.zeros((8, 16, 140), np.uint8)
    prob[4, 2:14, 10:130] = 250  # a one-voxel sheet: the max pyramid keeps it
    source = write_volume(tmp_path / "prob.zarr", prob, spatial=SCROLL)
    output = tmp_path / name
    argv = ["postprocess", str(source), "--output", str(output), "--quiet", "--zarr-format", str(zarr_format)]
    assert main(argv) == 0
    if name.endswith(".ome.zarr"):
        levels = assert_ome(output, zarr_format)
        assert levels[0].dtype == np.uint8 and levels[1].shape == (4, 8, 70)
        assert levels[1].any() and levels[1].max() == 1
    else:
        assert set(np.unique(assert_plain(output, zarr_format)[:])) <= {0, 1}


# -------------------------------------------------------------------------------------- block-wise
@pytest.fixture(scope="module")
def threads_cluster():
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster:
        yield cluster


@pytest.mark.parametrize(("name", "zarr_format"), [("b.zarr", 2), ("b.ome.zarr", 2), ("b3.ome.zarr", 3)])
def test_block_wise_outputs(
    tmp_path: Path, threads_cluster, model_path: Path, name: str, zarr_format: int
) -> None:
    source = tmp_path / "ct.ome.zarr"
    write_ome_zarr(source, scan_volume((32, 32, 64), seed=2), spatial=SCROLL, chunks=(32, 32, 32))
    output = tmp_path / name
    argv = ["predict", "--model", str(model_path), "--input", str(source), "--output", str(output),
            "--scheduler", threads_cluster.scheduler_address, "--block-size", "32", "--chunk-size", "32",
            "--device", "cpu", "--precision", "fp32", "--tta", "0", "--quiet",
            "--zarr-format", str(zarr_format)]  # fmt: skip
    assert main(argv) == 0
    if name.endswith(".ome.zarr"):
        levels = assert_ome(output, zarr_format)
        assert levels[0].dtype == np.uint8 and levels[1].shape == (16, 16, 32)
    else:
        assert assert_plain(output, zarr_format).dtype == np.uint8


# ---------------------------------------------------------------------------------- labels writer
def test_labels_writer_zarr_and_ome_zarr(tmp_path: Path) -> None:
    from napari_vesuvius._writer import write_labels_tif, write_labels_zarr

    labels = np.zeros((6, 10, 150), np.int32)
    labels[2:5, 3:8, 20:140] = 1
    labels[3, 4, 21] = 2
    units = ("micrometer",) * 3
    meta = {"scale": list(SCROLL.scale), "translate": list(SCROLL.translation), "units": units}
    (plain,) = write_labels_zarr(str(tmp_path / "l.zarr"), labels, meta)
    np.testing.assert_array_equal(assert_plain(Path(plain))[:], labels)
    (ome,) = write_labels_zarr(str(tmp_path / "l.ome.zarr"), labels, meta)
    levels = assert_ome(Path(ome))
    np.testing.assert_array_equal(levels[0], labels)
    np.testing.assert_array_equal(levels[1], labels[::2, ::2, ::2])  # labels taken, never averaged
    (tif,) = write_labels_tif(str(tmp_path / "l.tif"), labels, meta)
    with open_volume(tif) as volume:
        assert volume.spatial == SCROLL
    (bare,) = write_labels_zarr(str(tmp_path / "bare"), labels, {})  # no layer attributes: 1 voxel = 1
    assert Path(bare).name == "bare.zarr" and assert_plain(Path(bare), 2, Spatial()).dtype == np.uint8


# ---------------------------------------------------------------------------------- proofread saves
@pytest.mark.parametrize("zarr_format", [2, 3])
def test_versioned_zarr_saves_keep_format_and_placement(tmp_path: Path, zarr_format: int) -> None:
    from napari_vesuvius.core.proofread.save import save_version

    labels = np.zeros((40, 40, 40), np.uint8)
    original = write_volume(
        tmp_path / "7.zarr", labels, zarr_format=zarr_format, spatial=SCROLL, chunks=(16, 16, 16)
    )
    crop = np.ones((4, 4, 4), np.uint8)
    box = (slice(2, 6), slice(10, 14), slice(30, 34))
    version = save_version(original, crop, box=box, full_shape=labels.shape)
    array = assert_plain(version, zarr_format)
    assert int(array[:].sum()) == 64 and int(array[3, 11, 31]) == 1
    assert int(zarr.open_array(str(original), mode="r")[:].sum()) == 0  # the original is never written
    whole = save_version(original, np.full(labels.shape, 2, np.uint8))
    assert int(assert_plain(whole, zarr_format)[0, 0, 0]) == 2


def test_versioned_ome_zarr_saves_stay_valid_and_new_zarrs_are_v2(tmp_path: Path) -> None:
    from napari_vesuvius.core.proofread.save import save_version

    labels = np.zeros((8, 8, 300), np.uint8)
    labels[:, :, 100:] = 2  # the first chunk (x < 128) is stored, so the crop's chunk is a linked file
    original = write_volume(tmp_path / "9.ome.zarr", labels, spatial=SCROLL, downsample="nearest")
    box = (slice(0, 4), slice(0, 4), slice(0, 4))
    version = save_version(original, np.ones((4, 4, 4), np.uint8), box=box, full_shape=labels.shape)
    levels = assert_ome(version)
    assert int(levels[0][box].sum()) == 64 and int(levels[1][:2, :2, :2].sum()) == 8
    np.testing.assert_array_equal(levels[0][:, :, 4:], labels[:, :, 4:])
    before = assert_ome(original)  # linked chunk files were unshared before the write
    np.testing.assert_array_equal(before[0], labels)
    np.testing.assert_array_equal(before[1], labels[::2, ::2, ::2])

    fresh = save_version(tmp_path / "new.zarr", np.ones((4, 4, 4), np.uint8), box=box, full_shape=(8, 8, 8))
    assert int(assert_plain(fresh, 2, Spatial())[:].sum()) == 64
    new_ome = save_version(
        tmp_path / "fresh.ome.zarr",
        np.ones((4, 4, 4), np.uint8),
        box=box,
        full_shape=labels.shape,
        spatial=SCROLL,
    )
    assert int(assert_ome(new_ome)[0].sum()) == 64
    # a family holding a plain zarr and an OME-Zarr: each version keeps its own kind
    after_plain = save_version(
        tmp_path / "fresh.zarr", np.ones((4, 4, 4), np.uint8), box=box, full_shape=labels.shape
    )
    assert_plain(after_plain, 2, SCROLL)  # placed like the family's latest version (the OME-Zarr)
    again = save_version(new_ome, np.full((4, 4, 4), 2, np.uint8), box=box, full_shape=labels.shape)
    assert int(assert_ome(again)[0].sum()) == 128
