"""Output paths (core/outputs.py): never onto an input, never over an existing output without being asked,
and OS errors turned into one ``error: <path>: <problem>`` line by the CLI."""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_vesuvius.cli.main import main
from napari_vesuvius.core.errors import OutputError
from napari_vesuvius.core.outputs import (
    check_output_folder,
    check_output_path,
    os_error_message,
    refuse_inputs,
)


def _digest(path: Path) -> str:
    if path.is_dir():
        parts = sorted(p for p in path.rglob("*") if p.is_file())
        return hashlib.sha256(b"".join(p.read_bytes() for p in parts)).hexdigest()
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def prob(tmp_path: Path) -> Path:
    path = tmp_path / "prob.tif"
    rng = np.random.default_rng(0)
    tifffile.imwrite(path, rng.integers(0, 256, (8, 16, 16), dtype=np.uint8))
    return path


def _zarr(path: Path) -> Path:
    import zarr

    zarr.create_array(store=str(path), shape=(4, 4, 4), dtype="uint8", fill_value=0)
    return path


# ------------------------------------------------------------------------------------- core rules
def test_new_output_is_accepted_and_existing_needs_overwrite(tmp_path, prob) -> None:
    out = tmp_path / "mask.tif"
    assert check_output_path(out, inputs=[prob]) == out
    out.write_bytes(b"old")
    with pytest.raises(OutputError, match=r"mask\.tif: exists \(use --overwrite"):
        check_output_path(out, inputs=[prob])
    assert check_output_path(out, inputs=[prob], overwrite=True) == out


@pytest.mark.parametrize("spelling", ["same", "dotdot", "symlink", "hardlink"])
def test_output_that_is_an_input_is_refused_even_with_overwrite(tmp_path, prob, spelling) -> None:
    (tmp_path / "sub").mkdir()
    if spelling == "same":
        out = prob
    elif spelling == "dotdot":
        out = tmp_path / "sub" / ".." / "prob.tif"
    elif spelling == "symlink":
        out = tmp_path / "link.tif"
        out.symlink_to(prob)
    else:
        out = tmp_path / "hard.tif"
        os.link(prob, out)
    with pytest.raises(OutputError, match=r"is (an|the) input"):
        check_output_path(out, inputs=[prob], overwrite=True)


def test_zarr_inside_input_and_input_inside_output_are_refused(tmp_path) -> None:
    store = _zarr(tmp_path / "ct.zarr")
    with pytest.raises(OutputError, match="lies inside the input"):
        check_output_path(store / "pred.zarr", inputs=[store], overwrite=True)
    group = tmp_path / "group.zarr"
    import zarr

    zarr.open_group(store=str(group), mode="w").create_array("0", shape=(4, 4, 4), dtype="uint8")
    with pytest.raises(OutputError, match=r"(holds|contains) the input"):
        check_output_path(group, inputs=[group / "0"], overwrite=True)
    with pytest.raises(OutputError, match="lies inside the input"):
        check_output_path(group / "1", inputs=[group / "0"], overwrite=True)
    # a plain folder is not an input volume: writing next to its files is fine
    plain = tmp_path / "dataset"
    plain.mkdir()
    assert check_output_path(plain / "pred.tif", inputs=[plain])


def test_folder_that_is_not_a_store_is_never_replaced(tmp_path) -> None:
    folder = tmp_path / "notes.zarr"
    folder.mkdir()
    (folder / "mine.txt").write_text("keep")
    with pytest.raises(OutputError, match="not a zarr store"):
        check_output_path(folder, overwrite=True)
    store = _zarr(tmp_path / "old.zarr")
    assert check_output_path(store, overwrite=True) == store


def test_missing_or_file_parent_is_refused(tmp_path) -> None:
    afile = tmp_path / "somefile"
    afile.write_text("x")
    with pytest.raises(OutputError, match="is a file, not a folder"):
        check_output_path(afile / "x.zarr")
    with pytest.raises(OutputError, match="is a file, not a folder"):
        check_output_path(afile / "deeper" / "x.zarr")
    with pytest.raises(OutputError, match="parent folder does not exist"):
        check_output_path(tmp_path / "missing" / "x.tif")


def test_url_inputs_are_skipped(tmp_path) -> None:
    refuse_inputs(tmp_path / "x.zarr", ["s3://bucket/x.zarr", None])


def test_output_folder_rules(tmp_path, prob) -> None:
    afile = tmp_path / "file"
    afile.write_text("x")
    with pytest.raises(OutputError, match="exists and is not a folder"):
        check_output_folder(afile)
    with pytest.raises(OutputError, match=r"is (an|the) input"):
        check_output_folder(tmp_path, inputs=[tmp_path])
    with pytest.raises(OutputError, match=r"is (an|the) input"):
        check_output_folder(tmp_path, inputs=[prob], writes=["prob.tif"])
    assert check_output_folder(tmp_path / "runs" / "a", inputs=[tmp_path]) == tmp_path / "runs" / "a"


def test_os_error_message_names_the_path() -> None:
    assert os_error_message(OSError(errno.ENOSPC, "No space left on device", "/d/x.zarr")) == (
        "/d/x.zarr: No space left on device"
    )
    assert os_error_message(OSError(errno.EXDEV, "Invalid cross-device link", "/a", None, "/b")) == (
        "/a -> /b: Invalid cross-device link"
    )
    assert os_error_message(OSError("plain")) == "plain"


# ------------------------------------------------------------------------------------------ commands
def test_postprocess_onto_its_input_is_refused_and_the_input_kept(tmp_path, prob, capsys) -> None:
    before = _digest(prob)
    assert main(["postprocess", str(prob), "-o", str(prob), "--quiet"]) == 1
    assert main(["postprocess", str(prob), "-o", str(prob), "--quiet", "--overwrite"]) == 1
    err = capsys.readouterr().err
    assert err.count("error:") == 2 and "input of this command" in err and str(prob) in err
    assert _digest(prob) == before


def test_postprocess_existing_output_needs_overwrite(tmp_path, prob, capsys) -> None:
    out = tmp_path / "mask.tif"
    out.write_bytes(b"precious")
    assert main(["postprocess", str(prob), "-o", str(out), "--quiet"]) == 1
    assert "exists (use --overwrite" in capsys.readouterr().err
    assert out.read_bytes() == b"precious"
    assert main(["postprocess", str(prob), "-o", str(out), "--quiet", "--overwrite"]) == 0
    assert tifffile.imread(out).dtype == np.uint8


def test_config_outputs_need_overwrite(tmp_path, prob, capsys) -> None:
    cfg = tmp_path / "cfg.json"
    cfg.write_text("{}")
    assert main(["postprocess", "--write-default-config", str(cfg)]) == 1
    assert cfg.read_text() == "{}"
    assert main(["postprocess", "--write-default-config", str(cfg), "--overwrite"]) == 0
    assert "t_low" in cfg.read_text()
    err = capsys.readouterr().err
    assert "cfg.json: exists" in err


def test_oserror_mid_write_is_one_line_and_leaves_no_partial(tmp_path, prob, capsys, monkeypatch) -> None:
    import napari_vesuvius.core.volume.write as volume_write

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "mask.zarr"))

    monkeypatch.setattr(volume_write, "write_zarr_slabs", full_disk)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["postprocess", str(prob), "-o", str(tmp_path / "mask.zarr"), "--quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {tmp_path / 'mask.zarr'}: No space left on device"]
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no partial store left behind


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES])
def test_read_only_output_folder_is_one_line(tmp_path, prob, capsys, monkeypatch, code) -> None:
    import napari_vesuvius.core.volume.write as volume_write

    def refuse(*args, **kwargs):
        raise OSError(code, os.strerror(code), str(tmp_path / "mask.tif"))

    monkeypatch.setattr(volume_write, "write_tiff", refuse)
    assert main(["postprocess", str(prob), "-o", str(tmp_path / "mask.tif"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.strip() == f"error: {tmp_path / 'mask.tif'}: {os.strerror(code)}"
    assert "Traceback" not in err


def test_output_under_a_file_is_refused_before_work(tmp_path, prob, capsys) -> None:
    afile = tmp_path / "somefile"
    afile.write_text("x")
    assert main(["postprocess", str(prob), "-o", str(afile / "x.zarr"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {afile / 'x.zarr'}:") and "is a file, not a folder" in err


def test_demo_workdir_is_not_reused_without_overwrite(tmp_path, capsys) -> None:
    from napari_vesuvius.cli.demo import DEMO_MARKER, prepare_workdir

    work = tmp_path / "work"
    (work / "dataset").mkdir(parents=True)
    (work / "dataset" / "mine.tif").write_bytes(b"real data")
    with pytest.raises(OutputError, match="not written by a demo"):
        prepare_workdir(work, overwrite=True)
    assert (work / "dataset" / "mine.tif").exists()
    (work / DEMO_MARKER).write_text("demo")
    with pytest.raises(OutputError, match="use --overwrite"):
        prepare_workdir(work, overwrite=False)
    assert prepare_workdir(work, overwrite=True) == work
    assert not (work / "dataset").exists() and (work / DEMO_MARKER).is_file()


def test_run_dir_never_replaces_an_input(tmp_path, capsys) -> None:
    run = tmp_path / "run"
    run.mkdir()
    init = run / "checkpoint_best.pt"
    init.write_bytes(b"model")
    argv = ["train", "--run-dir", str(run), "--init", str(init), "--epochs", "1"]
    argv += ["--iterations-per-epoch", "1"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "checkpoint_best.pt" in err and "input of this command" in err
    assert init.read_bytes() == b"model"


@pytest.mark.slow
def test_inference_widget_never_writes_over_an_opened_file(make_napari_viewer, tmp_path, qtbot) -> None:
    import zarr

    from napari_vesuvius.widgets.inference_widget import InferenceWidget

    model = tmp_path / "m.pt"
    assert main(["init-model", "--output", str(model), "--patch-size", "16", "16", "16"]) == 0
    ct = np.random.default_rng(1).integers(0, 256, (16, 16, 16), dtype=np.uint8)
    store = tmp_path / "ct.zarr"
    zarr.create_array(store=str(store), shape=ct.shape, dtype="uint8")[:] = ct
    before = _digest(store)
    viewer = make_napari_viewer()
    viewer.add_image(ct, name="ct", metadata={"path": str(store)})  # as the reader opens it
    widget = InferenceWidget(viewer, persist=False)
    widget.image.value = viewer.layers["ct"]
    widget.models.model.value = model
    widget.device.value = "cpu"
    widget.output_zarr.value = store
    widget.replace_zarr.value = True
    assert widget.run() is None
    assert "input of this command" in widget.message.value
    assert _digest(store) == before
    other = _zarr(tmp_path / "other.zarr")
    widget.output_zarr.value = other
    widget.replace_zarr.value = False
    assert widget.run() is None
    assert "exists (tick 'replace" in widget.message.value
    widget.replace_zarr.value = True
    assert widget.run() is not None
    qtbot.waitUntil(lambda: not widget.task.running, timeout=60000)
    assert zarr.open_array(str(other), mode="r").shape == ct.shape
    assert _digest(store) == before


def test_predict_on_a_full_disk_is_one_line_and_leaves_no_partial_store(
    tmp_path, capsys, monkeypatch
) -> None:
    import napari_vesuvius.core.inference.engine as engine

    model = tmp_path / "m.pt"
    assert main(["init-model", "--output", str(model), "--patch-size", "16", "16", "16"]) == 0
    ct = tmp_path / "ct.tif"
    tifffile.imwrite(ct, np.full((16, 16, 16), 100, np.uint8), photometric="minisblack")
    real = engine.predict_volume

    def fills_the_disk(volume, models, *, output=None, **kwargs):
        output[:4] = 1  # some chunks reach the disk, then it is full
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "p.zarr" / "c" / "0"))
        yield from real(volume, models, output=output, **kwargs)  # pragma: no cover

    monkeypatch.setattr(engine, "predict_volume", fills_the_disk)
    before = sorted(p.name for p in tmp_path.iterdir())
    argv = ["predict", "--model", str(model), "--input", str(ct), "--output", str(tmp_path / "p.zarr")]
    assert main([*argv, "--quiet", "--device", "cpu"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"error: {tmp_path / 'p.zarr' / 'c' / '0'}: No space left on device"
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_a_file_url_input_is_compared_as_its_path_and_remote_urls_are_skipped(tmp_path: Path) -> None:
    import zarr

    scan = tmp_path / "scan.zarr"
    zarr.open_group(str(scan), mode="w", zarr_format=2).create_array("0", shape=(4, 4, 4), dtype="u1")
    with pytest.raises(OutputError, match="input"):
        check_output_path(scan, inputs=[f"file://{scan}"], overwrite=True)
    with pytest.raises(OutputError, match="input"):
        check_output_path(scan / "0", inputs=[f"file://{scan}"], overwrite=True)
    check_output_path(tmp_path / "pred.zarr", inputs=["https://example.org/scan.zarr", f"file://{scan}"])
