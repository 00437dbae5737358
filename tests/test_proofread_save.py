"""Saving corrected labels: version names, no overwriting, kills mid-save, zarr crop write-back, autosave."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from napari_vesuvius.core.dataset import ChallengeDataset
from napari_vesuvius.core.errors import VolumeError
from napari_vesuvius.core.progress import run_job
from napari_vesuvius.core.proofread import save as save_module
from napari_vesuvius.core.proofread.accept import iter_accept
from napari_vesuvius.core.proofread.autosave import (
    discard_autosave,
    next_generation,
    read_autosave,
    write_autosave,
)
from napari_vesuvius.core.proofread.naming import (
    autosave_path,
    family_stem,
    is_derived_name,
    latest_version,
    list_versions,
    next_version_path,
)
from napari_vesuvius.core.proofread.region import parse_box
from napari_vesuvius.core.proofread.save import save_version
from napari_vesuvius.core.proofread.session import EditSession
from napari_vesuvius.core.volume.io import open_volume, write_ome_zarr, write_volume

SHAPE = (24, 20, 28)


def _digest(path: Path) -> str:
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        return hashlib.sha256(b"".join(p.read_bytes() for p in files)).hexdigest()
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _read(path: Path) -> np.ndarray:
    with open_volume(path) as volume:
        return np.asarray(volume.data.compute())


@pytest.fixture
def labels() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 3, SHAPE).astype(np.uint8)


def test_version_names_follow_the_family_and_skip_hidden_files(tmp_path: Path) -> None:
    original = tmp_path / "1234.tif"
    assert next_version_path(original).name == "1234.v001.tif"
    (tmp_path / "1234.v001.tif").write_bytes(b"x")
    (tmp_path / "1234.v007.tif").write_bytes(b"x")
    (tmp_path / ".1234.v009.tif.abc.partial.tif").write_bytes(b"x")  # an interrupted save
    (tmp_path / "12345.v010.tif").write_bytes(b"x")  # another family
    assert [p.name for p in list_versions(original)] == ["1234.v001.tif", "1234.v007.tif"]
    assert next_version_path(tmp_path / "1234.v001.tif").name == "1234.v008.tif"
    assert autosave_path(tmp_path / "1234.v007.tif").name == "1234.autosave.tif"
    assert (
        family_stem("seg.v012.ome.zarr") == "seg"
        and next_version_path(tmp_path / "s.zarr").name == "s.v001.zarr"
    )
    assert is_derived_name("1234.v001.tif") and is_derived_name("1234.autosave.tif")
    assert not is_derived_name("1234.tif") and not is_derived_name("v001.tif")


def test_datasets_ignore_versions_and_autosaves(tmp_path: Path, labels: np.ndarray) -> None:
    for folder in ("train_images", "train_labels"):
        (tmp_path / folder).mkdir()
        write_volume(tmp_path / folder / "7.tif", labels)
    save_version(tmp_path / "train_labels" / "7.tif", labels)
    write_autosave(tmp_path / "train_labels" / "7.tif", labels)
    dataset = ChallengeDataset.open(tmp_path)
    assert dataset.train_ids == ["7"] and dataset.problems() == []


def test_saves_never_touch_the_original_and_keep_every_version(tmp_path: Path, labels: np.ndarray) -> None:
    original = tmp_path / "7.tif"
    write_volume(original, labels)
    before = _digest(original)
    edited = labels.copy()
    edited[3:6] = 1
    first = save_version(original, edited)
    edited[10:12] = 2
    second = save_version(original, edited)
    assert (first.name, second.name) == ("7.v001.tif", "7.v002.tif")
    assert _digest(original) == before
    np.testing.assert_array_equal(_read(second), edited)
    assert _read(first)[10:12].tolist() != edited[10:12].tolist()  # the previous version is the backup
    assert sorted(p.name for p in tmp_path.iterdir()) == ["7.tif", "7.v001.tif", "7.v002.tif"]


def test_a_crop_save_patches_the_latest_version(tmp_path: Path, labels: np.ndarray) -> None:
    original = tmp_path / "7.tif"
    write_volume(original, labels)
    whole = labels.copy()
    whole[0] = 2
    save_version(original, whole)  # v001: the base of the next crop save
    box = parse_box("5:9,2:12,4:20", SHAPE)
    crop = np.ones((4, 10, 16), np.uint8)
    path = save_version(original, crop, box=box, full_shape=SHAPE)
    expected = whole.copy()
    expected[box] = crop
    np.testing.assert_array_equal(_read(path), expected)


def test_a_version_number_taken_meanwhile_is_never_overwritten(
    tmp_path: Path, labels: np.ndarray, monkeypatch
) -> None:
    original = tmp_path / "7.tif"
    taken = tmp_path / "7.v001.tif"
    taken.write_bytes(b"another save got here first")
    real = save_module.next_version_path
    answers = iter([taken])
    monkeypatch.setattr(
        save_module, "next_version_path", lambda p, ext=None: next(answers, None) or real(p, ext)
    )
    path = save_version(original, labels)
    assert path.name == "7.v002.tif" and taken.read_bytes() == b"another save got here first"


def test_a_failure_mid_save_leaves_no_file_behind(tmp_path: Path, labels: np.ndarray, monkeypatch) -> None:
    from napari_vesuvius.core.progress import Progress
    from napari_vesuvius.core.volume import write as volume_write

    original = tmp_path / "7.tif"
    write_volume(original, labels)
    save_version(original, labels)
    snapshot = {p.name: _digest(p) for p in tmp_path.iterdir()}

    def broken(tmp, path, source, compression, spatial=None):
        tmp.write_bytes(b"II*\x00 half a TIFF")
        yield Progress(1, 2, "writing slices")
        raise OSError("disk full")

    monkeypatch.setattr(volume_write, "write_tiff", broken)
    with pytest.raises(OSError, match="disk full"):
        save_version(original, labels)
    assert {p.name: _digest(p) for p in tmp_path.iterdir()} == snapshot


KILLED_SAVE = textwrap.dedent(
    """
    import sys
    import time
    import numpy as np
    from napari_vesuvius.core.proofread.save import iter_save_version

    labels = np.full((96, 256, 256), 2, np.uint8)
    job = iter_save_version(sys.argv[1], labels)
    next(job)  # the first slabs are on their way into the partial file
    print("writing", flush=True)
    time.sleep(120)  # killed here, mid-save
    """
)


@pytest.mark.skipif(os.name == "nt", reason="SIGKILL")
def test_killing_the_process_mid_save_keeps_the_previous_files(tmp_path: Path) -> None:
    original = tmp_path / "7.tif"
    first = np.ones((96, 256, 256), np.uint8)
    write_volume(original, np.zeros_like(first))
    save_version(original, first)
    snapshot = {p.name: _digest(p) for p in tmp_path.iterdir()}
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_SAVE, str(original)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout.readline().strip() == "writing"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(60)
    visible = {p.name: _digest(p) for p in tmp_path.iterdir() if not p.name.startswith(".")}
    assert visible == snapshot  # no v002, no broken file: only a hidden partial may remain
    np.testing.assert_array_equal(_read(latest_version(original)), first)
    assert save_version(original, first).name == "7.v002.tif"  # saving carries on normally


def _chunk_files(root: Path) -> dict[str, int]:
    names = {".zarray", ".zattrs", ".zgroup", "zarr.json"}
    return {
        str(p.relative_to(root)): p.stat().st_ino
        for p in root.rglob("*")
        if p.is_file() and p.name not in names
    }


def test_a_zarr_crop_edit_rewrites_exactly_the_edited_region(tmp_path: Path, labels: np.ndarray) -> None:
    original = tmp_path / "seg.zarr"
    write_volume(original, labels, chunks=(8, 8, 8))
    before = _digest(original)
    box = parse_box("8:16,8:16,8:24", SHAPE)  # exactly chunks z1, y1, x1-2
    with open_volume(original) as volume:
        accepted = run_job(iter_accept(volume.data, is_probability=False, labels=volume.data, box=box))
        session = EditSession.from_accepted(accepted, original, SHAPE)
    session.labels[:] = 1
    session.labels[0, 0, 0] = 2
    path = run_job(session.iter_save())
    assert path.name == "seg.v001.zarr" and _digest(original) == before
    expected = labels.copy()
    expected[box] = session.labels
    np.testing.assert_array_equal(_read(path), expected)
    old, new = _chunk_files(original), _chunk_files(path)
    assert set(new) <= set(old)
    rewritten = {name for name in new if new[name] != old[name]}
    assert len(rewritten) == 2  # the two chunks inside the box; every other chunk is the same file
    assert all(new[name] == old[name] for name in set(new) - rewritten)


def test_an_ome_zarr_crop_edit_updates_the_pyramid_in_the_box(tmp_path: Path, labels: np.ndarray) -> None:
    import zarr

    original = tmp_path / "seg.ome.zarr"
    write_ome_zarr(original, [labels, labels[::2, ::2, ::2]], chunks=(8, 8, 8))
    box = parse_box("4:12,0:8,8:16", SHAPE)
    path = save_version(original, np.ones((8, 8, 8), np.uint8), box=box, full_shape=SHAPE)
    assert path.name == "seg.v001.ome.zarr"
    group = zarr.open_group(str(path), mode="r")
    full = group["0"][:]
    expected = labels.copy()
    expected[box] = 1
    np.testing.assert_array_equal(full, expected)
    np.testing.assert_array_equal(group["1"][:], full[::2, ::2, ::2])


def test_a_crop_of_a_volume_without_labels_becomes_a_sparse_zarr(tmp_path: Path) -> None:
    path = save_version(
        tmp_path / "big_labels.zarr", np.ones((4, 4, 4), np.uint8), box=parse_box("0:4,0:4,0:4", (64,) * 3),
        full_shape=(64, 64, 64),
    )  # fmt: skip
    assert _read(path).sum() == 64 and len(_chunk_files(path)) == 1


def test_autosave_round_trips_and_a_failed_autosave_keeps_the_previous(
    tmp_path: Path, labels: np.ndarray, monkeypatch
) -> None:
    from napari_vesuvius.core import atomic

    original = tmp_path / "7.tif"
    box = parse_box("2:10,0:20,4:8", SHAPE)
    crop, baseline = labels[box].copy(), np.zeros((8, 20, 4), np.uint8)
    path = write_autosave(original, crop, box=box, full_shape=SHAPE, baseline=baseline)
    saved = read_autosave(path)
    np.testing.assert_array_equal(saved.data, crop)
    np.testing.assert_array_equal(saved.baseline, baseline)
    assert (saved.box, saved.full_shape, saved.original) == (box, SHAPE, original)
    before = _digest(path)

    def failing_fsync(fd: int) -> None:
        raise OSError("killed")

    monkeypatch.setattr(atomic.os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="killed"):
        write_autosave(original, np.zeros_like(crop), box=box, full_shape=SHAPE)
    assert _digest(path) == before and [p.name for p in tmp_path.iterdir()] == [path.name]


def test_bad_saves_name_the_file_and_the_problem(tmp_path: Path, labels: np.ndarray) -> None:
    with pytest.raises(VolumeError, match=r"7\.nii.*\.tif/\.tiff or \.zarr"):
        save_version(tmp_path / "7.nii", labels)
    with pytest.raises(VolumeError, match="does not match its box"):
        save_version(tmp_path / "7.tif", labels, box=parse_box("0:2,0:2,0:2", SHAPE), full_shape=SHAPE)
    (tmp_path / "x.tif").write_bytes(b"not an autosave")
    with pytest.raises(VolumeError, match=r"x\.tif"):
        read_autosave(tmp_path / "x.tif")


class _SlowEncoder:
    """Stands in for the autosave encoder: the write of ``generation`` waits for ``release``."""

    def __init__(self, monkeypatch, generation: int) -> None:
        from napari_vesuvius.core.proofread import autosave as autosave_module

        self.generation, self.encode = generation, autosave_module._encode
        self.blocked, self.release = threading.Event(), threading.Event()
        monkeypatch.setattr(autosave_module, "_encode", self)

    def __call__(self, pages: np.ndarray, meta: dict) -> bytes:
        if meta["generation"] == self.generation:
            self.blocked.set()
            assert self.release.wait(60)
        return self.encode(pages, meta)


def _in_thread(function, *args, **kwargs) -> tuple[threading.Thread, list]:
    result: list = []
    thread = threading.Thread(target=lambda: result.append(function(*args, **kwargs)))
    thread.start()
    return thread, result


def test_a_slow_older_autosave_never_replaces_a_newer_one(tmp_path: Path, monkeypatch) -> None:
    original = tmp_path / "3.tif"
    old, new = np.zeros(SHAPE, np.uint8), np.ones(SHAPE, np.uint8)
    older, newer = next_generation(), next_generation()
    slow = _SlowEncoder(monkeypatch, older)
    thread, result = _in_thread(write_autosave, original, old, generation=older)
    assert slow.blocked.wait(30)  # the older write is busy encoding ...
    assert write_autosave(original, new, generation=newer) == autosave_path(original)  # ... the newer lands
    slow.release.set()
    thread.join(30)
    assert result == [None]  # the older one is skipped, not renamed over the newer
    saved = read_autosave(autosave_path(original))
    np.testing.assert_array_equal(saved.data, new)
    assert saved.generation == newer
    assert write_autosave(original, old, generation=older) is None  # an older snapshot arriving late
    np.testing.assert_array_equal(read_autosave(autosave_path(original)).data, new)


def test_an_older_autosave_yields_to_a_newer_one_still_being_written(tmp_path: Path, monkeypatch) -> None:
    original = tmp_path / "4.tif"
    older, newer = next_generation(), next_generation()
    slow = _SlowEncoder(monkeypatch, newer)
    thread, result = _in_thread(write_autosave, original, np.ones(SHAPE, np.uint8), generation=newer)
    assert slow.blocked.wait(30)
    assert write_autosave(original, np.zeros(SHAPE, np.uint8), generation=older) is None
    assert not autosave_path(original).exists()
    slow.release.set()
    thread.join(30)
    assert result == [autosave_path(original)]
    assert read_autosave(autosave_path(original)).data.all()


def test_autosave_order_holds_across_processes_but_not_against_a_clock_set_back(tmp_path: Path) -> None:
    from napari_vesuvius.core.proofread import autosave as autosave_module

    original = tmp_path / "5.tif"
    older, newer = next_generation(), next_generation()
    write_autosave(original, np.ones(SHAPE, np.uint8), generation=newer)
    autosave_module._ledgers.clear()  # another process: only the file on disk tells what is newer
    assert write_autosave(original, np.zeros(SHAPE, np.uint8), generation=older) is None
    future = time.time_ns() + 24 * 3600 * 10**9  # written while the clock was a day ahead
    write_autosave(original, np.ones(SHAPE, np.uint8), generation=future)
    autosave_module._ledgers.clear()
    assert write_autosave(original, np.zeros(SHAPE, np.uint8)) == autosave_path(original)
    assert not read_autosave(autosave_path(original)).data.any()


def test_discarding_after_a_version_save_keeps_newer_work_and_stops_older_writes(
    tmp_path: Path, monkeypatch
) -> None:
    original = tmp_path / "6.tif"
    in_flight, saved_snapshot = next_generation(), next_generation()
    slow = _SlowEncoder(monkeypatch, in_flight)
    thread, result = _in_thread(write_autosave, original, np.ones(SHAPE, np.uint8), generation=in_flight)
    assert slow.blocked.wait(30)
    assert discard_autosave(original, upto=saved_snapshot)  # the version holds everything up to here
    slow.release.set()
    thread.join(30)
    assert result == [None] and not autosave_path(original).exists()  # not brought back
    newer = next_generation()
    write_autosave(original, np.ones(SHAPE, np.uint8), generation=newer)
    assert not discard_autosave(original, upto=saved_snapshot)  # edits after the version: kept
    assert read_autosave(autosave_path(original)).generation == newer
