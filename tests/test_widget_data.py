"""Viewer tests for the Data step: open a dataset folder in the background, browse ids with the layers
updated in place, label colours and counts, and errors that keep what was open."""

from __future__ import annotations

import numpy as np
import pytest

from napari_vesuvius.core.labels import IGNORE, LABEL_COLORS, SURFACE


@pytest.fixture
def dataset_folder(tmp_path):
    from napari_vesuvius.core.synthetic import write_challenge_dataset

    write_challenge_dataset(tmp_path / "dataset", n_train=2, n_test=1, shape=(32, 40, 40), seed=3)
    return tmp_path / "dataset"


def _widget(make_napari_viewer):
    from napari_vesuvius.widgets.data_widget import DataWidget

    viewer = make_napari_viewer()
    widget = DataWidget(viewer, persist=False)
    viewer.window.add_dock_widget(widget, name="Data")
    return viewer, widget


def _wait(qtbot, widget) -> None:
    qtbot.waitUntil(lambda: not widget.busy, timeout=30000)


def _open(qtbot, widget, path) -> None:
    widget.open_path(path)
    _wait(qtbot, widget)


def _layer(viewer, kind: str):
    return next(layer for layer in viewer.layers if type(layer).__name__ == kind)


def test_open_dataset_runs_in_background_and_shows_image_and_labels(
    make_napari_viewer, dataset_folder, qtbot
):
    from napari_vesuvius.widgets._layers import LABELS_OPACITY

    viewer, widget = _widget(make_napari_viewer)
    widget.path.value = dataset_folder
    widget.open_path(dataset_folder)
    assert widget.task.running  # the csvs and the first volume are read on the worker thread
    assert len(viewer.layers) == 0 and list(widget.volume_id.choices) == []
    _wait(qtbot, widget)

    ids = list(widget.volume_id.choices)
    assert len(ids) == 3 and widget.volume_id.value == ids[0]
    assert "2 train, 1 test" in widget.message.value
    assert sorted(type(layer).__name__ for layer in viewer.layers) == ["Image", "Labels"]
    image, labels = _layer(viewer, "Image"), _layer(viewer, "Labels")
    assert viewer.layers.index(image) < viewer.layers.index(labels)  # labels drawn over the CT
    assert image.colormap.name == "gray" and tuple(image.contrast_limits) == (0.0, 255.0)
    assert labels.opacity == pytest.approx(LABELS_OPACITY)
    assert "label" in labels.name and ids[0] in labels.name
    np.testing.assert_allclose(labels.colormap.map(SURFACE), LABEL_COLORS[SURFACE], atol=1e-6)
    np.testing.assert_allclose(labels.colormap.map(IGNORE), LABEL_COLORS[IGNORE], atol=1e-6)
    assert LABEL_COLORS[IGNORE][3] < 1.0  # ignore is semi-transparent
    assert "shape (32, 40, 40)" in widget.info.value


def test_next_previous_update_the_same_layers_in_place(make_napari_viewer, dataset_folder, qtbot):
    import tifffile

    viewer, widget = _widget(make_napari_viewer)
    _open(qtbot, widget, dataset_folder)
    ids = list(widget.volume_id.choices)
    train, test_id = ids[:2], str(widget.dataset.test_ids[0])
    image, labels = _layer(viewer, "Image"), _layer(viewer, "Labels")
    labels.opacity = 0.3  # a display choice of the user survives browsing

    widget.step(+1)
    _wait(qtbot, widget)
    assert widget.volume_id.value == train[1]
    assert list(viewer.layers) == [image, labels]  # the same layer objects
    assert image.name == train[1] and labels.name.startswith(f"{train[1]} labels")
    assert image.metadata["vesuvius_id"] == train[1]
    expected = tifffile.imread(widget.dataset.image_path(train[1]))
    np.testing.assert_array_equal(np.asarray(image.data[5]), expected[5])
    np.testing.assert_array_equal(
        np.asarray(labels.data[5]), tifffile.imread(widget.dataset.label_path(train[1]))[5]
    )
    assert labels.opacity == pytest.approx(0.3)
    assert train[1] in widget.message.value and "train" in widget.message.value

    widget.volume_id.value = test_id  # a test id has no labels: the label layer is hidden and emptied
    _wait(qtbot, widget)
    assert list(viewer.layers) == [image, labels] and image.name == test_id
    assert not labels.visible and "no labels" in labels.name
    assert widget.slots.label_layers() == [] and "labels" not in widget.info.value
    assert "test" in widget.message.value

    widget.step(-1)  # back to a training id: the same label layer shows again
    _wait(qtbot, widget)
    assert widget.volume_id.value == train[1]
    assert list(viewer.layers) == [image, labels] and labels.visible
    assert labels.name.startswith(f"{train[1]} labels")


def test_rapid_clicks_show_the_latest_id_only(make_napari_viewer, dataset_folder, qtbot):
    viewer, widget = _widget(make_napari_viewer)
    _open(qtbot, widget, dataset_folder)
    ids = list(widget.volume_id.choices)
    started: list[str] = []
    original = widget.task.start

    def start(job, *, description, **callbacks):
        started.append(description)
        return original(job, description=description, **callbacks)

    widget.task.start = start
    for _ in range(4):  # next, next, next, next: wraps to ids[1]
        widget.step(+1)
    _wait(qtbot, widget)
    assert widget.volume_id.value == ids[4 % len(ids)]
    assert len(started) <= 2  # the first click's load, then only the latest; stale ones never start
    image = _layer(viewer, "Image")
    assert image.name == ids[4 % len(ids)] and image.metadata["vesuvius_id"] == ids[4 % len(ids)]
    assert len(viewer.layers) == 2


def test_toggle_ignore_hides_label_two_only(make_napari_viewer, dataset_folder, qtbot):
    viewer, widget = _widget(make_napari_viewer)
    _open(qtbot, widget, dataset_folder)
    labels = _layer(viewer, "Labels")
    widget.toggle_ignore()
    assert labels.colormap.map(IGNORE)[3] == 0
    assert labels.colormap.map(SURFACE)[3] == 1
    widget.toggle_ignore()
    assert labels.colormap.map(IGNORE)[3] == pytest.approx(LABEL_COLORS[IGNORE][3])


def test_count_label_values_runs_in_background(make_napari_viewer, dataset_folder, qtbot):
    import tifffile

    from napari_vesuvius.widgets._format import count

    _, widget = _widget(make_napari_viewer)
    _open(qtbot, widget, dataset_folder)
    widget.count_label_values()
    assert widget.task.running
    _wait(qtbot, widget)
    label = tifffile.imread(widget.dataset.label_path(widget.volume_id.value))
    values, counts = np.unique(label, return_counts=True)
    assert counts.max() >= 1000  # so the thousands separator is exercised
    for value, n in zip(values, counts, strict=True):
        assert f"{value}: {count(n)} " in widget.counts.value
    assert "e+" not in widget.counts.value
    widget.step(+1)  # the counts belong to the volume shown: cleared when another one shows
    _wait(qtbot, widget)
    assert widget.counts.value == ""


def test_failed_open_keeps_the_dataset_and_its_ids(make_napari_viewer, dataset_folder, qtbot, tmp_path):
    viewer, widget = _widget(make_napari_viewer)
    _open(qtbot, widget, dataset_folder)
    ids, layers = list(widget.volume_id.choices), list(viewer.layers)
    bogus = tmp_path / "not_a_volume.txt"
    bogus.write_text("hello")

    _open(qtbot, widget, bogus)
    assert "not_a_volume.txt" in widget.message.value and "expected" in widget.message.value
    assert list(widget.volume_id.choices) == ids and widget.dataset is not None
    assert list(viewer.layers) == layers

    widget.step(+1)  # browsing still works after the failed open
    _wait(qtbot, widget)
    assert widget.volume_id.value == ids[1] and _layer(viewer, "Image").name == ids[1]

    widget.open_path(bogus)
    widget.volume_id.value = ids[2]  # chosen while the (failing) open runs: shown once it failed
    _wait(qtbot, widget)
    assert _layer(viewer, "Image").name == ids[2] and list(widget.volume_id.choices) == ids


def test_missing_path_says_it_does_not_exist(make_napari_viewer, tmp_path, qtbot):
    viewer, widget = _widget(make_napari_viewer)
    _open(qtbot, widget, tmp_path / "nowhere" / "dataset")
    assert "nowhere" in widget.message.value and "does not exist" in widget.message.value
    assert len(viewer.layers) == 0


def test_unrelated_folder_says_what_is_expected(make_napari_viewer, tmp_path, qtbot):
    folder = tmp_path / "photos"
    folder.mkdir()
    viewer, widget = _widget(make_napari_viewer)
    _open(qtbot, widget, folder)
    assert "photos" in widget.message.value and "challenge dataset folder" in widget.message.value
    assert len(viewer.layers) == 0


def test_opening_a_single_volume_replaces_the_dataset(make_napari_viewer, dataset_folder, qtbot):
    viewer, widget = _widget(make_napari_viewer)
    _open(qtbot, widget, dataset_folder)
    image = _layer(viewer, "Image")
    volume = widget.dataset.image_path(widget.dataset.test_ids[0])

    _open(qtbot, widget, volume)
    assert widget.dataset is None and list(widget.volume_id.choices) == []
    assert list(viewer.layers) == [image] and image.name == volume.stem  # updated in place
    assert widget.slots.label_layers() == []


def test_primary_controls_and_long_messages_keep_the_dock_narrow(make_napari_viewer, tmp_path, qtbot):
    _, widget = _widget(make_napari_viewer)
    controls = widget.primary_controls()
    assert widget.open_button in controls and widget.next_button in controls and widget.task in controls
    width = widget.native.minimumSizeHint().width()
    _open(qtbot, widget, tmp_path / ("a_very_long_folder_name_" * 8) / "dataset")
    assert "does not exist" in widget.message.value
    assert widget.native.minimumSizeHint().width() <= max(width, 370)


def test_open_supersedes_browsing_and_a_bad_first_volume_still_lists_ids(
    make_napari_viewer, dataset_folder, qtbot, tmp_path
):
    from napari_vesuvius.core.synthetic import write_challenge_dataset

    other = tmp_path / "other"
    write_challenge_dataset(other, n_train=1, n_test=1, shape=(16, 24, 24), seed=5)
    viewer, widget = _widget(make_napari_viewer)
    _open(qtbot, widget, dataset_folder)
    widget.step(+1)  # a load of the old dataset under way ...
    widget.open_path(other)  # ... then a new dataset: the new one ends up shown
    widget.step(+1)  # clicks during the open are ignored: the id list is about to change
    _wait(qtbot, widget)
    assert widget.dataset.root == other and widget.volume_id.value == widget.dataset.ids[0]
    assert _layer(viewer, "Image").name == widget.dataset.ids[0] and len(viewer.layers) == 2

    first = widget.dataset.image_path(widget.dataset.ids[0])
    first.write_bytes(b"not a tiff")
    _open(qtbot, widget, other)
    assert list(widget.volume_id.choices) == widget.dataset.ids  # the folder opened
    assert first.name in widget.message.value and "error" in widget.message.value
    widget.step(+1)  # the next id opens fine
    _wait(qtbot, widget)
    assert _layer(viewer, "Image").name == widget.dataset.ids[1]


# -- URLs (a loopback server started by the test: no network) ---------------------------------------
@pytest.fixture
def served(tmp_path):
    """``(folder, base URL)``: an http.server on 127.0.0.1 serving ``folder``, stopped after the test."""
    import functools
    import http.server
    import threading

    folder = tmp_path / "served"
    folder.mkdir()
    busy: set[str] = set()  # paths answered 429 once (a rate-limiting server), then served

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):  # keep the test output clean
            pass

        def do_GET(self):
            if self.path.startswith("/busy/") and self.path not in busy:
                busy.add(self.path)
                self.send_response(429)
                self.send_header("Retry-After", "0")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            super().do_GET()

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_url_opens_in_the_background_at_a_pyramid_level_with_a_chunk_cache(
    make_napari_viewer, served, tmp_path, qtbot
):
    from napari_vesuvius.core.volume.io import open_volume
    from napari_vesuvius.core.volume.spatial import Spatial
    from napari_vesuvius.core.volume.write import write_ome_zarr

    folder, base = served
    rng = np.random.default_rng(0)
    data = rng.integers(3, 250, size=(32, 64, 64), dtype=np.uint8)
    placed = Spatial((7.91, 7.91, 7.91), (0.0, 0.0, 0.0), "micrometer")
    write_ome_zarr(folder / "scroll.ome.zarr", data, spatial=placed, chunks=(16, 16, 16))
    with open_volume(folder / "scroll.ome.zarr", level=1) as local:
        expected, expected_spatial = np.asarray(local.data), local.spatial
    viewer, widget = _widget(make_napari_viewer)
    assert not widget.open_options.expanded  # level and cache are advanced options: collapsed
    url = f"{base}/scroll.ome.zarr"
    widget.path.value = url
    widget.level.value = 1
    widget.cache_dir.value = tmp_path / "cache"
    widget.open_button.changed.emit(True)
    assert widget.task.running  # the network is never waited for on the GUI thread
    _wait(qtbot, widget)

    assert widget.message.value == f"opened {url} at pyramid level 1", widget.message.value
    image = _layer(viewer, "Image")
    level0 = image.data[0] if image.multiscale else image.data
    np.testing.assert_array_equal(np.asarray(level0), expected)
    assert Spatial.from_layer(image) == expected_spatial and image.metadata["path"] == url
    assert "micrometer" in widget.info.value
    assert any(path.is_file() for path in (tmp_path / "cache").rglob("*"))  # chunks kept for next time


def test_a_missing_url_is_named_in_the_status_line(make_napari_viewer, served, qtbot):
    _, base = served
    viewer, widget = _widget(make_napari_viewer)
    url = f"{base}/nothing.zarr"
    _open(qtbot, widget, url)
    assert widget.message.value.startswith("error:") and url in widget.message.value
    assert len(viewer.layers) == 0


def test_an_unreachable_host_is_named_after_its_retries(make_napari_viewer, qtbot, monkeypatch):
    import dataclasses
    import socket

    from napari_vesuvius.core.volume import remote

    quick = dataclasses.replace(remote.RetryPolicy(), attempts=2, base_delay_s=0.01, budget_s=2.0)
    real = remote.RemoteOptions
    monkeypatch.setattr(remote, "RemoteOptions", lambda **kwargs: real(retry=quick, **kwargs))
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    viewer, widget = _widget(make_napari_viewer)
    url = f"http://127.0.0.1:{port}/scroll.zarr"
    _open(qtbot, widget, url)
    assert widget.message.value.startswith("error:") and url in widget.message.value
    assert len(viewer.layers) == 0


def test_the_retries_of_a_busy_server_show_in_the_status_line(make_napari_viewer, served, qtbot):
    from napari_vesuvius.core.volume.write import write_volume

    folder, base = served
    (folder / "busy").mkdir()
    data = np.full((16, 32, 32), 100, np.uint8)
    write_volume(folder / "busy" / "ct.zarr", data)
    viewer, widget = _widget(make_napari_viewer)
    url = f"{base}/busy/ct.zarr"
    _open(qtbot, widget, url)
    assert widget.message.value.startswith(f"opened {url} (") and "retries" in widget.message.value
    assert _layer(viewer, "Image").metadata["remote"]["retries"] > 0
    np.testing.assert_array_equal(np.asarray(_layer(viewer, "Image").data), data)
