"""The shared atomic-write helper: an interrupted write never damages the existing file."""

from __future__ import annotations

import pytest

from napari_vesuvius.core.atomic import atomic_file, atomic_write_bytes, atomic_write_text


def test_write_replaces_file(tmp_path):
    target = tmp_path / "a.json"
    atomic_write_text(target, "old")
    atomic_write_text(target, "new")
    assert target.read_text() == "new"
    atomic_write_bytes(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_failure_mid_write_keeps_previous_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "labels.bin"
    target.write_bytes(b"previous")
    with pytest.raises(RuntimeError, match="disk full"), atomic_file(target, "wb") as handle:
        handle.write(b"partial")
        raise RuntimeError("disk full")
    assert target.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["labels.bin"]


# ---------------------------------------------------------------------------- stale temporaries
def _dead_pid() -> int:
    """The id of a process that has just exited (not reused within a test run)."""
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _temp_name(target: str, pid: int, suffix: str = ".tmp", host: str | None = None) -> str:
    from napari_vesuvius.core.atomic import _HOST

    return f".{target}.0123abcd-{pid}-{host or _HOST}{suffix}"


def _age(path, seconds: float) -> None:
    import os
    import time

    past = time.time() - seconds
    os.utime(path, (past, past))


def test_a_killed_writers_temp_is_removed_by_the_next_write(tmp_path):
    dead = tmp_path / _temp_name("a.json", _dead_pid())
    dead.write_bytes(b"x" * 1000)
    _age(dead, 3600)
    atomic_write_text(tmp_path / "a.json", "new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_temps_in_use_young_or_of_other_machines_are_kept(tmp_path):
    import os

    live = tmp_path / _temp_name("a.json", os.getpid())
    young = tmp_path / _temp_name("a.json", _dead_pid()).replace("0123abcd", "4567abcd")
    foreign = tmp_path / _temp_name("a.json", _dead_pid(), host="ffffff").replace("0123abcd", "89abcdef")
    for path in (live, young, foreign):
        path.write_text("in use")
    _age(live, 3600)
    _age(foreign, 3600)
    atomic_write_text(tmp_path / "a.json", "new")
    assert all(p.exists() for p in (live, young, foreign))


def test_unrelated_hidden_files_are_never_touched(tmp_path):
    dead = _dead_pid()
    unrelated = [
        ".a.json.swp",
        ".a.json.backup.tmp",
        ".a.json.0123abcd.tmp",
        _temp_name("b.json", dead),  # another target
        _temp_name("a.json", dead, suffix=".old"),  # another suffix (a renamed previous target)
        _temp_name("a.json", dead) + ".keep",
        "a.json.0123abcd-1-abcdef.tmp",  # not hidden
    ]
    for name in unrelated:
        (tmp_path / name).write_text("mine")
        _age(tmp_path / name, 10 * 24 * 3600)
    atomic_write_text(tmp_path / "a.json", "new")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*unrelated, "a.json"])


def test_earlier_versions_temps_are_removed_only_when_a_day_old(tmp_path):
    from napari_vesuvius.core.atomic import remove_stale_temps

    old = tmp_path / ".submission.zip.0123456789ab.tmp"
    fresh = tmp_path / ".submission.zip.ba9876543210.tmp"
    old.write_bytes(b"zip")
    fresh.write_bytes(b"zip")
    _age(old, 2 * 24 * 3600)
    assert remove_stale_temps(tmp_path / "submission.zip", ".tmp") == [old]
    assert fresh.exists() and not old.exists()


def test_every_writer_cleans_its_own_stale_temporaries(tmp_path):
    import numpy as np

    from napari_vesuvius.core.export.validate import SubmissionTarget
    from napari_vesuvius.core.export.writer import SubmissionWriter
    from napari_vesuvius.core.progress import run_job
    from napari_vesuvius.core.proofread.save import save_version
    from napari_vesuvius.core.volume.write import write_volume

    dead = _dead_pid()
    debris = [
        tmp_path / _temp_name("submission.zip", dead),
        tmp_path / _temp_name("v.tif", dead, ".tmp.tif"),
        tmp_path / _temp_name("v.zarr", dead, ".tmp.zarr"),
        tmp_path / _temp_name("labels.v001.tif", dead, ".partial.tif"),
    ]
    for path in debris:
        if path.name.endswith(".zarr"):
            (path / "c").mkdir(parents=True)
            (path / "zarr.json").write_text("{}")
            for child in path.iterdir():  # a folder counts as touched when its entries were
                _age(child, 3600)
        else:
            path.write_bytes(b"partial")
        _age(path, 3600)
    volume = np.zeros((2, 4, 4), np.uint8)
    target = SubmissionTarget("1", (2, 4, 4), tmp_path / "1.tif")
    with SubmissionWriter(tmp_path / "submission.zip", [target]) as writer:
        writer.add("1", volume)
        run_job(writer.finish())
    write_volume(tmp_path / "v.tif", volume)
    write_volume(tmp_path / "v.zarr", volume)
    save_version(tmp_path / "labels.tif", volume)
    assert not any(path.exists() for path in debris)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "labels.v001.tif", "submission.zip", "v.tif", "v.zarr",
    ]  # fmt: skip


def test_swap_in_keeps_the_previous_store_name_out_of_cleaning(tmp_path):
    from napari_vesuvius.core.atomic import stale_temps

    old = tmp_path / _temp_name("v.zarr", _dead_pid(), ".old")
    old.mkdir()
    _age(old, 3600)
    assert stale_temps(tmp_path / "v.zarr", ".tmp.zarr") == []


@pytest.mark.slow
def test_sigkilled_export_leaves_a_temp_that_the_next_export_removes(tmp_path, capsys):
    """A real ``export`` killed with SIGKILL mid-zip: the target is untouched, the next run cleans up."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import numpy as np
    import tifffile

    from napari_vesuvius.cli.main import main

    images, masks = tmp_path / "test_images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    for vid in ("1", "2", "3"):
        tifffile.imwrite(images / f"{vid}.tif", np.full((4, 8, 8), 9, np.uint8), photometric="minisblack")
        tifffile.imwrite(masks / f"{vid}.tif", np.ones((4, 8, 8), np.uint8), photometric="minisblack")
    out = tmp_path / "submission.zip"
    out.write_bytes(b"earlier")
    script = (
        "import sys, time\n"
        "import napari_vesuvius.core.export.writer as w\n"
        "load = w._load_mask\n"
        "calls = []\n"
        "def slow(source):\n"
        "    calls.append(source)\n"
        "    if len(calls) == 2:\n"
        "        print('ready', flush=True); time.sleep(600)\n"
        "    return load(source)\n"
        "w._load_mask = slow\n"
        "from napari_vesuvius.cli.main import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    argv = ["export", "--masks", str(masks), "--data", str(images), "--out", str(out), "--overwrite"]
    argv.append("--quiet")
    child = subprocess.Popen([sys.executable, "-c", script, *argv], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(timeout=60)
    temps = [p for p in tmp_path.iterdir() if p.name.startswith(".submission.zip.")]
    assert len(temps) == 1 and temps[0].name.endswith(f"-{child.pid}-" + temps[0].name.split("-")[-1])
    assert out.read_bytes() == b"earlier"
    past = time.time() - 3600
    os.utime(temps[0], (past, past))
    assert main(argv) == 0
    assert not temps[0].exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["masks", "submission.zip", "test_images"]
