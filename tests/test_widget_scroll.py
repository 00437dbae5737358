"""Viewer test: the Inference dock's block-wise run of a zarr layer on a dask cluster."""

from __future__ import annotations

import numpy as np
import pytest
import zarr


@pytest.fixture(scope="module")
def cluster():
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0") as local:
        yield local


@pytest.fixture
def scroll_widget(make_napari_viewer, tmp_path):
    from inference_helpers import TEST_CONFIG, scan_volume, tiny_network
    from napari_vesuvius._reader import layer_data
    from napari_vesuvius.core.inference.checkpoint import save_checkpoint
    from napari_vesuvius.core.inference.model_api import Normalization
    from napari_vesuvius.core.volume.io import open_volume
    from napari_vesuvius.widgets.inference_widget import InferenceWidget
    from scroll_helpers import one_torch_thread

    volume = np.zeros((48, 96, 160), np.uint8)
    volume[4:44, 8:90, 10:120] = scan_volume((40, 82, 110), seed=4)
    zarr.create_array(store=str(tmp_path / "scan.zarr"), data=volume, chunks=(32, 32, 32))
    checkpoint = save_checkpoint(
        tmp_path / "tiny.pt", tiny_network(0), TEST_CONFIG, Normalization(), (32,) * 3
    )
    viewer = make_napari_viewer()
    data, meta, _ = layer_data(open_volume(tmp_path / "scan.zarr"))
    viewer.add_image(data, **meta)
    viewer.add_image(volume, name="in memory")
    widget = InferenceWidget(viewer, persist=False)
    viewer.window.add_dock_widget(widget, name="Inference")
    widget.models.model.value = checkpoint
    widget.device.value = "cpu"
    widget.precision.value = "fp32"
    widget.cluster.value = True
    widget.output_zarr.value = tmp_path / "pred.zarr"
    with one_torch_thread():
        yield viewer, widget, volume, checkpoint, tmp_path


@pytest.mark.slow
def test_block_run_fills_a_multiscale_layer_equal_to_the_in_memory_pass(
    scroll_widget, cluster, qtbot
) -> None:
    from napari_vesuvius.core.inference.engine import predict
    from napari_vesuvius.core.inference.loading import load_model
    from napari_vesuvius.core.inference.models import ModelSpec
    from napari_vesuvius.widgets._layers import MODELS

    viewer, widget, volume, checkpoint, tmp_path = scroll_widget
    widget.image.value = viewer.layers["scan"]
    widget.scheduler.value = cluster.scheduler_address
    assert widget.run() is not None
    qtbot.waitUntil(lambda: not widget.task.running, timeout=120000)
    assert widget.task.last_error is None
    layer = viewer.layers["scan probability"]
    assert layer.multiscale and len(layer.data) == 2  # 160 > one 128 chunk: a second level
    expected = predict(volume, load_model(checkpoint), device="cpu", precision="fp32", output_dtype="uint8")
    got = np.asarray(layer.data[0][:])
    assert np.abs(got.astype(int) - expected.probability.astype(int)).max() <= 1
    assert layer.metadata["prediction"]["complete"] is True
    assert layer.metadata[MODELS] == [ModelSpec(checkpoint).describe()]  # Retrain fine-tunes these
    assert widget.last_result.complete and "blocks" in widget.log.value
    assert zarr.open_group(str(tmp_path / "pred.zarr"), mode="r").attrs["complete"] is True


def test_block_run_needs_a_zarr_layer_and_a_zarr_output(scroll_widget) -> None:
    viewer, widget, *_ = scroll_widget
    widget.image.value = viewer.layers["in memory"]
    assert widget.run() is None and "zarr / OME-Zarr" in widget.message.value
    widget.image.value = viewer.layers["scan"]
    widget.output_zarr.value = ""
    assert widget.run() is None and ".zarr output" in widget.message.value
