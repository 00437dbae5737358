"""Scoring refuses what would give a silently wrong score: non-mask predictions, bad label values and
block-wise outputs left incomplete by an interrupted run (with ``info`` still describing those)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_vesuvius.cli.main import main
from napari_vesuvius.core.errors import VolumeError
from napari_vesuvius.core.export import SubmissionError, check_binary
from napari_vesuvius.core.metric import score_many, score_volume
from napari_vesuvius.core.postprocess.sweep import cases_from_files, run_sweep
from napari_vesuvius.core.scroll.record import Record, incomplete_blocks
from napari_vesuvius.core.scroll.source import open_input
from napari_vesuvius.core.scroll.store import (
    ScrollOutput,
    plan_layout,
    prepare_output,
)
from napari_vesuvius.core.value_checks import (
    block_steps,
    iter_blocks,
    label_problem,
    mask_problem,
    value_counts,
)
from napari_vesuvius.core.volume.io import open_volume

SHAPE = (12, 16, 16)


def _label() -> np.ndarray:
    label = np.zeros(SHAPE, np.uint8)
    label[4:6, 2:-2, 2:-2] = 1
    label[:, :, -2:] = 2
    return label


def _write(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, array, compression="zlib")
    return path


def _digest(path: Path) -> str:
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        return hashlib.sha256(b"".join(p.read_bytes() for p in files)).hexdigest()
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ------------------------------------------------------------------------------ the shared rules
def test_mask_rule_is_the_export_rule() -> None:
    good = np.zeros(SHAPE, np.uint8)
    good[1, 1, 1] = 1
    assert mask_problem(good) is None and mask_problem(good.astype(bool)) is None
    assert mask_problem(good.astype(np.int64)) is None
    cases = {
        "float32": good.astype(np.float32),
        "255": good * 255,
        "probabilities": (np.arange(np.prod(SHAPE)) % 256).astype(np.uint8).reshape(SHAPE),
        "ct": np.full(SHAPE, 30000, np.uint16),
        "negative": good.astype(np.int8) - 1,
    }
    for name, array in cases.items():
        problem = mask_problem(array)
        assert problem is not None, name
        with pytest.raises(SubmissionError) as refused:
            check_binary(array, "id 1")
        assert str(refused.value) == f"id 1: {problem}"  # export says exactly what score says
    assert "threshold the probabilities first" in mask_problem(cases["float32"])  # type: ignore[operator]
    assert "postprocess" in mask_problem(cases["float32"])  # type: ignore[operator]
    assert "divide it by 255" in mask_problem(cases["255"])  # type: ignore[operator]
    assert "found 30000 in 3072 voxel(s)" in mask_problem(cases["ct"])  # type: ignore[operator]


def test_label_rule() -> None:
    assert label_problem(_label()) is None
    assert label_problem(_label().astype(np.float32)) is None  # numeric with valid values
    for bad, shown in ((3, "3"), (255, "255")):
        label = _label()
        label[0, 0, :5] = bad
        assert label_problem(label) == f"label values must be 0, 1 or 2; found {shown} in 5 voxel(s)"
    nan = _label().astype(np.float32)
    nan[0, 0, 0] = np.nan
    assert "nan" in label_problem(nan)  # type: ignore[operator]
    assert "dtype" in label_problem(np.zeros(SHAPE, "U1"))  # type: ignore[operator]


def test_value_check_is_streamed_block_by_block() -> None:
    da = pytest.importorskip("dask.array")
    big = np.zeros((64, 128, 128), np.uint8)
    assert block_steps(big.shape, [big], max_bytes=128 * 128 * 4) == (4, 128)
    assert block_steps(big.shape, [big], max_bytes=128 * 10) == (1, 10)  # a slice larger than a block
    sizes = [b[0].nbytes for _, b in iter_blocks([big], max_bytes=128 * 128 * 4)]
    assert len(sizes) == 16 and max(sizes) == 128 * 128 * 4
    lazy = da.from_array(big, chunks=(16, 64, 128))
    regions = [r for r, _ in iter_blocks([lazy, big])]  # lazy arrays go by their chunks
    assert len(regions) == 8 and regions[1] == (slice(0, 16), slice(64, 128), slice(0, 128))
    big[63, 127, 127] = 7
    assert value_counts(lazy) == {0: big.size} and value_counts(big) == {0: big.size - 1, 7: 1}


# ------------------------------------------------------------------------------ score_volume
def test_score_refuses_non_mask_predictions_naming_the_file() -> None:
    label = _label()
    names = ("p.tif", "l.tif")
    probabilities = (label == 1).astype(np.float32) * 0.9
    with pytest.raises(VolumeError, match=r"^p\.tif: mask dtype is float32.*postprocess"):
        score_volume(probabilities, label, names=names)
    with pytest.raises(VolumeError, match=r"^p\.tif: values must be 0 or 1; found 255 .*divide it by 255"):
        score_volume((label == 1).astype(np.uint8) * 255, label, names=names)
    ct = np.random.default_rng(0).integers(0, 65535, SHAPE).astype(np.uint16)
    with pytest.raises(VolumeError, match=r"^p\.tif: values must be 0 or 1"):
        score_volume(ct, label, names=names)
    with pytest.raises(VolumeError, match="does not match"):
        score_volume(label[:-1] == 1, label, names=names)
    # the official permissive rule stays available, and the two agree on a valid pair
    assert (
        score_volume(probabilities, label, strict=False).to_dict()
        == score_volume(label == 1, label).to_dict()
    )


def test_score_refuses_bad_label_values_naming_the_label() -> None:
    pred = (_label() == 1).astype(np.uint8)
    for bad in (3, 255):
        label = _label()
        label[0, 0, 0] = bad
        with pytest.raises(VolumeError, match=rf"^l\.tif: label values must be 0, 1 or 2; found {bad} in 1"):
            score_volume(pred, label, names=("p.tif", "l.tif"))
    label = _label()
    label[0, 0, 0] = 3
    with pytest.raises(VolumeError, match="label values"):
        score_many([("a", pred, label)])
    assert score_many([("a", pred, label)], strict=False).results[0].score <= 1.0


# ------------------------------------------------------------------------------ CLI
def test_cli_score_refuses_bad_inputs_unchanged(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    label = _label()
    good = _write(tmp_path / "good.tif", (label == 1).astype(np.uint8))
    labels = _write(tmp_path / "label.tif", label)
    bad_label = label.copy()
    bad_label[0, 0, 0] = 255
    table = [
        (
            _write(tmp_path / "prob.tif", (label == 1).astype(np.float32) * 0.7),
            labels,
            "prob.tif",
            "postprocess",
        ),
        (_write(tmp_path / "mask255.tif", (label == 1).astype(np.uint8) * 255), labels, "mask255.tif", "255"),
        (good, _write(tmp_path / "bad_label.tif", bad_label), "bad_label.tif", "label values"),
    ]
    for pred, lab, named, why in table:
        before = {p: _digest(p) for p in (pred, lab)}
        assert main(["score", str(pred), str(lab)]) == 1
        captured = capsys.readouterr()
        lines = captured.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and named in lines[0] and why in lines[0]
        assert "Traceback" not in captured.err and captured.out == ""
        assert {p: _digest(p) for p in (pred, lab)} == before
    assert main(["score", str(good), str(labels)]) == 0


# ------------------------------------------------------------------------------ incomplete outputs
def _block_output(location: Path, *, ome: bool, done: int, total_blocks: int = 8) -> np.ndarray:
    """A block-wise output (as ``predict`` writes it) of 2×2×2 blocks with ``done`` recorded."""
    shape = (16, 16, 16)
    layout = plan_layout(shape, 8, (8, 8, 8), ome)
    output = ScrollOutput.create(str(location), layout)
    mask = np.zeros(shape, np.uint8)
    mask[2:14, 3:13, 4:12] = 1
    level = output.level(0)
    record = Record({"model": "x"}, np.zeros(layout.grid.counts, bool), np.zeros(layout.grid.counts, bool))
    written = np.zeros(shape, np.uint8)
    for index, (z, y, x) in enumerate(np.ndindex(2, 2, 2)):
        if index >= done:
            break
        region = (slice(8 * z, 8 * z + 8), slice(8 * y, 8 * y + 8), slice(8 * x, 8 * x + 8))
        level[region] = mask[region]
        written[region] = mask[region]
        record.done[z, y, x] = True
    output.write_record(record, complete=done == total_blocks)
    return written


@pytest.mark.parametrize("ome", [False, True])
def test_incomplete_block_output_is_refused_as_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], ome: bool
) -> None:
    store = tmp_path / ("mask.ome.zarr" if ome else "mask.zarr")
    _block_output(store, ome=ome, done=2)
    assert incomplete_blocks(ScrollOutput.open(str(store), None).node.attrs) == (2, 8)  # type: ignore[arg-type]
    with pytest.raises(VolumeError, match=r"incomplete block-wise output: 2 of 8 blocks done.*resume"):
        open_volume(store)
    with pytest.raises(VolumeError, match="2 of 8 blocks"):
        open_input(store)  # nor is it the input of another block-wise run
    assert open_volume(store, allow_incomplete=True).shape == (16, 16, 16)
    before = _digest(store)
    for command in (
        ["score", str(store), str(store)],
        ["postprocess", str(store), "-o", str(tmp_path / "o.tif")],
    ):
        assert main(command) == 1
        err = capsys.readouterr().err
        assert err.startswith("error: ") and "2 of 8 blocks done" in err and str(store) in err, command
        assert "predict" in err  # how to finish it
    assert _digest(store) == before and not (tmp_path / "o.tif").exists()
    assert main(["info", str(store)]) == 0
    assert "incomplete: 2 of 8 blocks done" in capsys.readouterr().out
    assert main(["info", str(store), "--json"]) == 0
    assert '"blocks_done": 2' in capsys.readouterr().out


def test_viewer_reader_shows_incomplete_output_with_warning(tmp_path: Path) -> None:
    """Opening an interrupted output in napari is allowed, loudly: a warning and the layer name say so."""
    from napari_vesuvius._reader import read_volumes
    from napari_vesuvius.core.errors import VesuviusWarning

    store = tmp_path / "mask.zarr"
    _block_output(store, ome=False, done=3)
    with pytest.warns(
        VesuviusWarning, match=r"mask\.zarr: incomplete block-wise output \(3 of 8 blocks done\)"
    ):
        [(_data, meta, _kind)] = read_volumes(str(store))
    assert meta["name"].endswith("(incomplete 3/8 blocks)")
    assert meta["metadata"]["incomplete"] == [3, 8]


def test_resume_and_complete_outputs_still_open(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "mask.zarr"
    _block_output(store, ome=False, done=6)
    layout = plan_layout((16, 16, 16), 8, (8, 8, 8), False)
    output, record = prepare_output(
        str(store), layout, {"model": "x"}, input_location=str(tmp_path / "in.zarr"), overwrite=False
    )
    assert int(record.done.sum()) == 6  # the run that resumes it reads it
    record.done[:] = True
    output.write_record(record, complete=True)
    assert incomplete_blocks(output.node.attrs) is None
    with open_volume(store) as volume:
        assert volume.shape == (16, 16, 16)
    assert main(["score", str(store), str(store)]) == 0
    assert "incomplete" not in capsys.readouterr().err


def test_live_display_reads_a_run_in_progress(tmp_path: Path) -> None:
    pytest.importorskip("napari")
    from napari_vesuvius.widgets._scroll_run import open_levels

    store = tmp_path / "mask.ome.zarr"
    written = _block_output(store, ome=True, done=3)
    np.testing.assert_array_equal(np.asarray(open_levels(str(store), 1)[0][:]), written)


# ------------------------------------------------------------------------------ sweep
def test_sweep_refuses_bad_label_values(tmp_path: Path) -> None:
    prob = np.zeros(SHAPE, np.uint8)
    prob[4:6, 2:-2, 2:-2] = 200
    label = _label()
    label[1, 1, 1] = 3
    prob_path = _write(tmp_path / "p.tif", prob)
    label_path = _write(tmp_path / "l.tif", label)
    cases = cases_from_files([("a", prob_path, label_path)])
    with pytest.raises(VolumeError, match=r"l\.tif: label values must be 0, 1 or 2; found 3 in 1"):
        run_sweep(cases, None, "t_low", [0.3])
    with pytest.raises(VolumeError, match=r"^a: label values must be 0, 1 or 2; found 3"):
        run_sweep([("a", prob, label)], None, "t_low", [0.3])


# ------------------------------------------------------------------------------ widget
def test_widget_shows_the_refusal(make_napari_viewer, qtbot) -> None:  # type: ignore[no-untyped-def]
    from napari_vesuvius.widgets.score_widget import ScoreWidget

    viewer = make_napari_viewer()
    label = _label()
    viewer.add_image((label == 1).astype(np.float32) * 0.8, name="prob")
    viewer.add_labels(label, name="labels")
    widget = ScoreWidget(viewer, persist=False)
    widget.mask.value = viewer.layers["prob"]
    widget.labels_layer.value = viewer.layers["labels"]
    assert widget.score() is not None
    qtbot.waitUntil(lambda: not widget.task.running, timeout=30000)
    assert widget.message.value.startswith("error: prob: mask dtype is float32")
    assert widget.last_score is None


@pytest.mark.parametrize("dtype", [np.bool_, np.uint8, np.uint16, np.int8, np.int32, np.int64, np.float32])
def test_block_counts_equal_unique(dtype: type) -> None:
    """The few-small-values shortcut of block_counts counts exactly like np.unique."""
    from napari_vesuvius.core.value_checks import block_counts

    rng = np.random.default_rng(3)
    for high in (1, 2, 3, 4, 300):
        values = rng.integers(0, high + 1, size=(5, 6, 7))
        if dtype in (np.int8, np.int32, np.int64, np.float32):
            values[0, 0, :3] = [-1, 0, 1]  # negative values take the general path
        block = values.astype(dtype) if dtype is not np.bool_ else values.astype(bool)
        unique, counts = np.unique(block.ravel(), return_counts=True)
        assert block_counts(block) == {v.item(): int(c) for v, c in zip(unique, counts, strict=True)}
    assert block_counts(np.zeros((0, 3, 3), np.uint8)) == {}
