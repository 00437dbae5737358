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
