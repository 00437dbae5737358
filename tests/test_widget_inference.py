"""Viewer tests for the Inference widget: run a tiny model on the sample, fill the layer, cancel."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    import torch

    from napari_vesuvius.core.inference.checkpoint import save_checkpoint
    from napari_vesuvius.core.inference.model_api import Normalization
    from napari_vesuvius.core.inference.unet import build_unet, preset

    torch.manual_seed(0)
    config = preset("tiny")
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    save_checkpoint(
        path, build_unet(config), config, Normalization(), (32, 32, 32), {"note": "random weights"}
    )
    return path


@pytest.fixture
def inference(make_napari_viewer, tiny_checkpoint):
    from napari_vesuvius.core.synthetic import make_fragment
    from napari_vesuvius.widgets.inference_widget import InferenceWidget

    viewer = make_napari_viewer()
    viewer.add_image(make_fragment((40, 56, 56), seed=2).image, name="ct")
    widget = InferenceWidget(viewer, persist=False)
    viewer.window.add_dock_widget(widget, name="Inference")
    widget.image.value = viewer.layers["ct"]
    widget.models.model.value = tiny_checkpoint
    widget.device.value = "cpu"
    widget.precision.value = "fp32"
    return viewer, widget


def test_run_fills_probability_layer_like_the_core_engine(inference, tiny_checkpoint, qtbot):
    from napari_vesuvius.core.inference.engine import predict
    from napari_vesuvius.core.inference.loading import load_model

    viewer, widget = inference
    assert widget.run() is not None
    assert "ct probability" in viewer.layers  # the layer appears at once
    qtbot.waitUntil(lambda: not widget.task.running, timeout=60000)
    layer = viewer.layers["ct probability"]
    expected = predict(viewer.layers["ct"].data, load_model(tiny_checkpoint), device="cpu", precision="fp32")
    np.testing.assert_allclose(
        layer.data.astype(np.float32), expected.probability.astype(np.float32), atol=1e-3
    )
    assert layer.metadata["prediction"]["complete"] is True
    assert widget.last_result.complete
    assert "Mvox/s" in widget.log.value


def test_cancel_marks_the_layer_partial(inference, qtbot):
    viewer, widget = inference
    widget.batch_size.value = 1
    widget.step.value = 0.25  # many tiles, so the run is still going when we cancel
    assert widget.run() is not None
    qtbot.waitUntil(lambda: widget.task.reports > 0, timeout=60000)
    widget.task.cancel()
    qtbot.waitUntil(lambda: not widget.task.running, timeout=60000)
    assert "ct probability (partial)" in viewer.layers
    assert viewer.layers["ct probability (partial)"].metadata["prediction"]["complete"] is False
    assert "cancelled" in widget.log.value


def test_ensemble_list_and_bad_folds(inference, tiny_checkpoint):
    _, widget = inference
    widget.models.weight.value = 2.0
    widget.add_member()
    widget.add_member()
    assert len(widget.models.members) == 2 and "2 × tiny.pt" in widget.models.ensemble.value
    widget.models.clear_members()
    assert widget.models.members == []
    widget.models.folds.value = "0,x"
    widget.add_member()
    assert "folds must be comma-separated integers" in widget.message.value


def test_the_probability_layer_carries_the_models_own_clean_up(inference, tiny_checkpoint, tmp_path, qtbot):
    import shutil

    from napari_vesuvius.core.inference.checkpoint import update_checkpoint_metadata
    from napari_vesuvius.core.postprocess import PostprocessConfig
    from napari_vesuvius.core.postprocess.choice import METADATA_KEY, PostprocessChoice
    from napari_vesuvius.widgets._layers import MODEL_POSTPROCESS, model_postprocess_of

    viewer, widget = inference
    own = PostprocessConfig(t_low=0.55, closing_z=1, closing_xy=0)
    model = shutil.copy(tiny_checkpoint, tmp_path / "trained.pt")
    update_checkpoint_metadata(model, {METADATA_KEY: PostprocessChoice(own, 0.7, 0.6, ("v",)).to_metadata()})
    widget.models.model.value = model
    assert widget.run() is not None
    layer = viewer.layers["ct probability"]
    assert layer.metadata[MODEL_POSTPROCESS] == own.to_dict() and model_postprocess_of(layer) == own
    qtbot.waitUntil(lambda: not widget.task.running, timeout=60000)
    assert layer.metadata["prediction"]["complete"] is True
    assert model_postprocess_of(layer) == own  # the finished run keeps it


def test_zarr_output_fills_a_partial_store_then_points_at_the_target(inference, tmp_path, qtbot):
    from pathlib import Path

    viewer, widget = inference
    target = tmp_path / "pred.zarr"
    widget.output_zarr.value = target
    assert widget.run() is not None
    layer = viewer.layers["ct probability"]
    assert Path(layer.data.store.root).name.endswith(".partial.zarr")  # fills next to the target
    assert not target.exists()
    qtbot.waitUntil(lambda: not widget.task.running, timeout=60000)
    assert Path(layer.data.store.root) == target  # published: the layer reads the final store
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pred.zarr"]
    assert layer.data.attrs["complete"] is True and layer.data[:].max() > 0
    assert widget.last_result.probability.shape == viewer.layers["ct"].data.shape


def test_cancelled_zarr_output_leaves_nothing_behind(inference, tmp_path, qtbot):
    viewer, widget = inference
    widget.output_zarr.value = tmp_path / "pred.zarr"
    widget.batch_size.value = 1
    widget.step.value = 0.25  # many tiles, so the run is still going when we cancel
    assert widget.run() is not None
    qtbot.waitUntil(lambda: widget.task.reports > 0, timeout=60000)
    widget.task.cancel()
    qtbot.waitUntil(lambda: not widget.task.running, timeout=60000)
    assert list(tmp_path.iterdir()) == []  # neither the target nor a partial store
    layer = viewer.layers["ct probability (partial)"]
    assert isinstance(layer.data, np.ndarray)  # the partial result stays visible, in memory
