"""The validated submission export: what goes into submission.zip, what is refused, and atomicity."""

from __future__ import annotations

import errno
import io
import zipfile
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import tifffile

from napari_vesuvius.cli.main import main
from napari_vesuvius.core.errors import CancelledError, VolumeError
from napari_vesuvius.core.export import (
    LZW_TAG,
    SubmissionError,
    check_binary,
    export_submission,
    iter_export_submission,
    read_submission,
    submission_targets,
)
from napari_vesuvius.core.progress import run_job
from napari_vesuvius.core.synthetic import write_volume_tif

SHAPES = {"101": (6, 10, 12), "7": (5, 9, 8), "33": (6, 10, 12)}


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """A challenge-layout folder: test.csv + test_images/ with three small CT volumes."""
    root = tmp_path / "data"
    (root / "test_images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for vid, shape in SHAPES.items():
        write_volume_tif(root / "test_images" / f"{vid}.tif", rng.integers(0, 255, shape, dtype=np.uint8))
    (root / "test.csv").write_text("id,scroll_id\n" + "".join(f"{vid},26002\n" for vid in SHAPES))
    return root


@pytest.fixture
def masks() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {vid: (rng.random(shape) > 0.8).astype(np.uint8) for vid, shape in SHAPES.items()}


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_zip_reads_back_exactly_with_tifffile(dataset, masks, tmp_path):
    out = tmp_path / "submission.zip"
    masks["7"] = masks["7"].astype(bool)  # bool masks are fine (stored as uint8)
    summary = export_submission(masks, out, dataset)
    with zipfile.ZipFile(out) as archive:
        assert sorted(archive.namelist()) == sorted(f"{vid}.tif" for vid in SHAPES)
        for vid in SHAPES:
            with tifffile.TiffFile(io.BytesIO(archive.read(f"{vid}.tif"))) as tif:
                assert len(tif.pages) == SHAPES[vid][0]  # one page per z-slice
                assert int(tif.pages[0].compression) == LZW_TAG
                array = tif.asarray()
            assert array.dtype == np.uint8
            np.testing.assert_array_equal(array, masks[vid].astype(np.uint8))
    assert [v.volume_id for v in summary.volumes] == ["7", "33", "101"]  # test.csv ids, natural order
    fraction = {v.volume_id: v.positive_fraction for v in summary.volumes}
    assert fraction["101"] == pytest.approx(float(masks["101"].mean()))
    assert summary.rows()[0][:2] == ("7", "5x9x8") and summary.zip_bytes == out.stat().st_size
    assert set(read_submission(out)) == set(SHAPES)
    assert _leftovers(tmp_path) == []


def _bad_float(masks):
    masks["33"] = masks["33"].astype(np.float32) * np.float32(1.00000002)
    return "id 33", "dtype is float32"


def _bad_values(masks):
    masks["101"][0, 0, :3] = [2, 255, 1]
    return "id 101", "values must be 0 or 1; found 2, 255 in 2 voxel(s)"


def _bad_shape(masks):
    masks["7"] = np.zeros((5, 9, 9), np.uint8)
    return "id 7", "mask shape (5, 9, 9) does not match the source image"


def _missing(masks):
    del masks["33"]
    return "", "no mask for test id(s) 33"


def _extra(masks):
    masks["999"] = np.zeros((6, 10, 12), np.uint8)
    return "", "id(s) 999 match no test image"


@pytest.mark.parametrize("spoil", [_bad_float, _bad_values, _bad_shape, _missing, _extra])
def test_invalid_masks_raise_a_clear_error_and_write_no_zip(dataset, masks, tmp_path, spoil):
    where, problem = spoil(masks)
    out = tmp_path / "submission.zip"
    with pytest.raises(SubmissionError) as raised:
        export_submission(masks, out, dataset)
    assert problem in str(raised.value) and str(raised.value).startswith(where)
    assert not out.exists()
    assert _leftovers(tmp_path) == []


def test_empty_inputs_are_refused(tmp_path, dataset, masks):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SubmissionError, match="no test images found: nothing to submit"):
        export_submission(masks, tmp_path / "a.zip", empty)
    with pytest.raises(SubmissionError, match=r"no mask files .* the zip would be empty"):
        export_submission(empty, tmp_path / "b.zip", dataset)
    with pytest.raises(SubmissionError, match="no masks given"):
        export_submission({}, tmp_path / "c.zip", dataset)
    (dataset / "test_images" / "7.tif").unlink()
    with pytest.raises(
        SubmissionError, match=r"id 7: test image .*7.tif is missing \(listed in .*test.csv\)"
    ):
        submission_targets(dataset)
    assert not any(tmp_path.glob("*.zip"))


def test_test_images_folder_and_plain_folder_give_the_same_ids(dataset, tmp_path):
    by_csv = [t.volume_id for t in submission_targets(dataset / "test_images")]
    assert by_csv == ["7", "33", "101"]
    plain = tmp_path / "plain"
    plain.mkdir()
    (dataset / "test_images" / "7.tif").rename(plain / "7.tif")
    assert [(t.volume_id, t.shape) for t in submission_targets(plain)] == [("7", (5, 9, 8))]


def _earlier_zip(out: Path) -> bytes:
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("old.tif", b"an earlier submission")
    return out.read_bytes()


def test_cancel_midway_keeps_the_earlier_zip(dataset, masks, tmp_path):
    out = tmp_path / "submission.zip"
    before = _earlier_zip(out)
    job = iter_export_submission(masks, out, dataset)
    next(job), next(job)  # one mask written into the temporary zip
    assert len(_leftovers(tmp_path)) == 1
    job.close()  # what Cancel does: GeneratorExit at the yield
    assert out.read_bytes() == before and _leftovers(tmp_path) == []
    reports = []
    with pytest.raises(CancelledError):
        run_job(iter_export_submission(masks, out, dataset), reports.append, lambda: len(reports) >= 4)
    assert out.read_bytes() == before and _leftovers(tmp_path) == []


def test_write_error_keeps_the_earlier_zip(dataset, masks, tmp_path, monkeypatch):
    from napari_vesuvius.core.export import writer

    out = tmp_path / "submission.zip"
    before = _earlier_zip(out)
    calls = []

    def disk_full(self, name, data):
        calls.append(name)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(self, name, data)

    original = zipfile.ZipFile.writestr
    monkeypatch.setattr(writer.zipfile.ZipFile, "writestr", disk_full)
    with pytest.raises(SubmissionError, match=r"submission.zip: writing 33.tif failed .*No space left"):
        export_submission(masks, out, dataset)
    assert out.read_bytes() == before and _leftovers(tmp_path) == []


def test_verification_catches_a_zip_that_reads_back_differently(dataset, masks, tmp_path, monkeypatch):
    from napari_vesuvius.core.export import writer

    real_decode = writer.decode_mask_tif

    def corrupt(data, where):
        array = real_decode(data, where).copy()
        array[0, 0, 0] ^= 1
        return array

    monkeypatch.setattr(writer, "decode_mask_tif", corrupt)
    out = tmp_path / "submission.zip"
    before = _earlier_zip(out)
    with pytest.raises(SubmissionError, match=r"submission\.zip:7\.tif: reads back different"):
        export_submission(masks, out, dataset)
    assert out.read_bytes() == before and _leftovers(tmp_path) == []


def test_check_binary_is_chunkwise_for_lazy_data():
    lazy = da.zeros((4, 8, 8), dtype=np.uint16, chunks=(1, 8, 8))
    check_binary(lazy, "lazy")
    with pytest.raises(SubmissionError, match="lazy: values must be 0 or 1; found 3 in 256 voxel"):
        check_binary(da.concatenate([lazy, lazy + 3]), "lazy")
    with pytest.raises(SubmissionError, match="id 1: values must be 0 or 1; found -1"):
        check_binary(np.array([[[0, -1]]], np.int8), "id 1")


def test_export_cli_zips_a_mask_folder_and_fails_with_exit_1(dataset, masks, tmp_path, capsys):
    folder = tmp_path / "masks"
    folder.mkdir()
    for vid, mask in masks.items():
        write_volume_tif(folder / f"{vid}.tif", mask)
    out = tmp_path / "submission.zip"
    assert main(["export", "--masks", str(folder), "--data", str(dataset), "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "101" in printed and "3 volume(s)" in printed and "verified" in printed
    back = read_submission(out)
    for vid, mask in masks.items():
        np.testing.assert_array_equal(back[vid], mask)
    write_volume_tif(folder / "55.tif", masks["7"])
    argv = ["export", "--masks", str(folder), "--data", str(dataset), "--out", str(out), "--overwrite"]
    assert main([*argv, "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "error:" in err and "55" in err and read_submission(out).keys() == masks.keys()


def test_writer_contribution_saves_only_binary_masks(tmp_path):
    from napari_vesuvius._writer import write_submission_tif

    mask = np.zeros((4, 6, 6), np.uint8)
    mask[1:3, 2:4, 2:4] = 1
    [written] = write_submission_tif(str(tmp_path / "m"), mask.astype(bool), {})
    assert written.endswith("m.tif")
    with tifffile.TiffFile(written) as tif:
        assert len(tif.pages) == 4 and int(tif.pages[0].compression) == LZW_TAG
        np.testing.assert_array_equal(tif.asarray(), mask)
    labels = mask.copy()
    labels[0, 0, 0] = 2
    with pytest.raises(VolumeError, match=r"bad.tif: values must be 0 or 1; found 2 in 1 voxel"):
        write_submission_tif(str(tmp_path / "bad.tif"), da.from_array(labels, chunks=2), {})
    with pytest.raises(VolumeError, match=r"bad\.tif: mask dtype is float64"):
        write_submission_tif(str(tmp_path / "bad.tif"), mask * 1.0, {})
    assert not (tmp_path / "bad.tif").exists() and _leftovers(tmp_path) == []


# -- the folder really is a test set ------------------------------------------------------------------


def _ct(shape=(6, 10, 12), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, shape, dtype=np.uint8)


def _folder(tmp_path: Path, name: str, files: dict[str, np.ndarray]) -> Path:
    folder = tmp_path / name
    folder.mkdir(parents=True)
    for file_name, array in files.items():
        write_volume_tif(folder / file_name, array)
    return folder


def _not_a_test_set(tmp_path: Path, dataset: Path, kind: str) -> tuple[Path, str]:
    """A folder that is no test set, and the words its refusal must hold."""
    rng = np.random.default_rng(3)
    if kind == "outputs by name":
        folder = _folder(tmp_path, "predictions", {"frag160_prob.tif": _ct(), "frag161_mask.tif": _ct()})
        return folder, "holds files that are not test CT images (frag160_prob.tif, frag161_mask.tif"
    if kind == "probability maps":
        folder = _folder(tmp_path, "out", {"7.tif": rng.random((6, 10, 12)).astype(np.float32)})
        return folder / "7.tif", "holds float32 values (a probability map?), not a test CT scan"
    if kind == "masks":
        folder = _folder(tmp_path, "out", {"7.tif": (rng.random((6, 10, 12)) > 0.7).astype(np.uint8)})
        return folder / "7.tif", "only the values 0, 1, 2: a label or mask volume"
    if kind == "train_labels":
        labels = _folder(dataset, "train_labels", {"5.tif": _ct()})
        return labels, f"is the train_labels/ folder of the dataset {dataset}, not a test set"
    if kind == "empty":
        folder = tmp_path / "empty"
        folder.mkdir()
        return folder, "no test images found: nothing to submit"
    assert kind == "dataset without tests"
    root = tmp_path / "train_only"
    _folder(root, "train_images", {"5.tif": _ct()})
    return root, "no test ids"


NOT_TEST_SETS = [
    "outputs by name",
    "probability maps",
    "masks",
    "train_labels",
    "empty",
    "dataset without tests",
]


@pytest.mark.parametrize("kind", NOT_TEST_SETS)
def test_a_folder_that_is_no_test_set_is_refused_naming_it(dataset, tmp_path, kind):
    folder, words = _not_a_test_set(tmp_path, dataset, kind)
    with pytest.raises(SubmissionError) as raised:
        submission_targets(folder.parent if folder.is_file() else folder)
    message = str(raised.value)
    assert message.startswith(str(folder)) and words in message
    assert "expected a challenge dataset folder (test.csv + test_images/)" in message


@pytest.mark.parametrize("command", ["export", "submit"])
@pytest.mark.parametrize("kind", ["outputs by name", "train_labels"])
def test_cli_refuses_a_folder_that_is_no_test_set_and_keeps_the_zip(
    dataset, masks, tmp_path, capsys, command, kind
):
    folder, words = _not_a_test_set(tmp_path, dataset, kind)
    out = tmp_path / "submission.zip"
    before = _earlier_zip(out)
    if command == "export":
        mask_folder = _folder(tmp_path, "masks", {f"{vid}.tif": mask for vid, mask in masks.items()})
        argv = ["export", "--masks", str(mask_folder)]
    else:
        model = tmp_path / "model.pt"
        model.write_bytes(b"never loaded: the data folder is refused first")
        argv = ["submit", "--model", str(model)]
    argv += ["--data", str(folder), "--out", str(out), "--overwrite", "--quiet"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert f"error: {folder}" in err and words in err
    assert out.read_bytes() == before


def test_submission_ids_and_the_question_before_replacing(dataset, masks, tmp_path):
    from napari_vesuvius.core.export import replace_question, submission_ids

    out = tmp_path / "submission.zip"
    export_submission(masks, out, dataset)
    assert submission_ids(out) == set(SHAPES)
    assert replace_question(out, submission_ids(out), ["7", "33", "101"]) is None  # same ids: no question
    question = replace_question(out, submission_ids(out), ["7", "33", "1001", "1002"])
    assert f"{out} holds 3 id(s), this run writes 4" in question
    assert "1 id(s) it holds are not in this test set (101)" in question
    assert "2 test id(s) are not in it (1001, 1002)" in question
    assert question.endswith("Replace submission.zip with the new submission?")
    _earlier_zip(out)  # holds old.tif
    assert submission_ids(out) == {"old"}
    (tmp_path / "broken.zip").write_bytes(b"not a zip")
    assert submission_ids(tmp_path / "broken.zip") is None
    assert "is not a readable zip" in replace_question(tmp_path / "broken.zip", None, ["7"])
