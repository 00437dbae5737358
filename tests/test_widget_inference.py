"""Viewer tests for the Inference widget: run a tiny model on the sample, fill the layer, cancel."""

from __future__ import annotations

import subprocess
import sys
import textwrap

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
    from napari_vesuvius.core.inference.models import ModelSpec
    from napari_vesuvius.widgets._layers import MODELS, models_of

    viewer, widget = inference
    assert widget.run() is not None
    qtbot.waitUntil(lambda: not widget.task.running, timeout=60000)
    layer = viewer.layers["ct probability"]
    assert layer is widget.layer and layer.blending == "translucent"
    # the models that made it, so Retrain fine-tunes them
    assert layer.metadata[MODELS] == [ModelSpec(tiny_checkpoint).describe()] == models_of(layer)
    expected = predict(viewer.layers["ct"].data, load_model(tiny_checkpoint), device="cpu", precision="fp32")
    np.testing.assert_allclose(
        layer.data.astype(np.float32), expected.probability.astype(np.float32), atol=1e-3
    )
    assert layer.metadata["prediction"]["complete"] is True
    assert widget.last_result.complete
    assert "Mvox/s" in widget.log.value


def test_a_second_run_reuses_the_layer_in_place(inference, qtbot):
    from napari_vesuvius.widgets._layers import MODELS

    viewer, widget = inference
    assert widget.run() is not None
    qtbot.waitUntil(lambda: not widget.task.running, timeout=60000)
    first = viewer.layers["ct probability"]
    first.name = "ct probability (partial)"  # as a cancelled run leaves it
    widget.output_dtype.value = "uint8"
    assert widget.run() is not None
    qtbot.waitUntil(lambda: not widget.task.running, timeout=60000)
    assert [layer.name for layer in viewer.layers] == ["ct", "ct probability"]
    layer = viewer.layers["ct probability"]
    assert layer is first and layer.data.dtype == np.uint8 and tuple(layer.contrast_limits) == (0, 255)
    assert layer.metadata["prediction"]["complete"] is True and layer.metadata[MODELS]


def test_cancel_marks_the_layer_partial(inference, qtbot, monkeypatch):
    from napari_vesuvius.widgets import inference_widget

    monkeypatch.setattr(inference_widget, "PREVIEW_INTERVAL_S", 0.0)
    viewer, widget = inference
    widget.batch_size.value = 1
    widget.step.value = 0.25  # many tiles, so the run is still going when we cancel
    assert widget.run() is not None
    qtbot.waitUntil(lambda: widget.layer is not None and np.any(widget.layer.data), timeout=60000)
    widget.task.cancel()
    qtbot.waitUntil(lambda: not widget.task.running, timeout=60000)
    assert "ct probability (partial)" in viewer.layers
    layer = viewer.layers["ct probability (partial)"]
    assert layer.metadata["prediction"]["complete"] is False
    assert np.any(layer.data) and widget.last_result is None  # what was computed stays visible
    assert "cancelled" in widget.log.value


def test_the_layer_fills_in_while_the_job_runs(inference, qtbot, monkeypatch):
    """Refreshes show tiles blended so far (the row in progress), long before the job ends."""
    from napari_vesuvius.widgets import inference_widget

    monkeypatch.setattr(inference_widget, "PREVIEW_INTERVAL_S", 0.0)
    monkeypatch.setattr(inference_widget, "REFRESH_INTERVAL_S", 0.0)
    monkeypatch.setattr(inference_widget, "REPORT_INTERVAL_S", 0.0)
    viewer, widget = inference
    widget.batch_size.value = 1
    seen: list[tuple[int, bool]] = []  # (voxels > 0 at a refresh, job still running)

    def watch(event) -> None:
        layer = event.value
        refresh = layer.refresh

        def counting_refresh(*args, **kwargs):
            seen.append((int(np.count_nonzero(layer.data)), widget.last_result is None))
            return refresh(*args, **kwargs)

        layer.refresh = counting_refresh

    viewer.layers.events.inserted.connect(watch)
    assert widget.run() is not None
    qtbot.waitUntil(lambda: not widget.task.running, timeout=60000)
    final = int(np.count_nonzero(viewer.layers["ct probability"].data))
    partial = [count for count, running in seen if running and 0 < count < final]
    assert len(partial) >= 2, seen  # several growing states shown before the result


def test_primary_controls_sit_outside_the_collapsed_sections(inference):
    _, widget = inference
    controls = widget.primary_controls()
    assert widget.run_button in controls and widget.task in controls and widget.image in controls
    for control in controls:
        assert control.native.isVisibleTo(widget.native), control
    for section in (widget.ensemble_section, widget.window_section, widget.output_section,
                    widget.cluster_section, widget.log_section):  # fmt: skip
        assert not section.expanded
    assert not widget.device.native.isVisibleTo(widget.native)  # advanced: collapsed
    widget.window_section.toggle()
    assert widget.device.native.isVisibleTo(widget.native)


def test_the_gui_thread_never_imports_torch_in_a_run(tiny_checkpoint, tmp_path):
    """Torch, the checkpoints and the output are loaded in the job: a fresh process that makes a viewer,
    runs the dock and waits for the result never imports torch on its main (GUI) thread."""
    script = textwrap.dedent(
        f"""
        import sys, threading, time
        import napari
        from qtpy.QtWidgets import QApplication
        from napari_vesuvius.core.synthetic import make_fragment
        from napari_vesuvius.widgets.inference_widget import InferenceWidget

        assert "torch" not in sys.modules
        on_gui_thread = []

        class Spy:
            def find_spec(self, name, path=None, target=None):
                gui = threading.current_thread() is threading.main_thread()
                if gui and name.partition(".")[0] == "torch":
                    on_gui_thread.append(name)
                return None

        sys.meta_path.insert(0, Spy())
        viewer = napari.Viewer(show=False)
        viewer.add_image(make_fragment((24, 40, 40), seed=2).image, name="ct")
        widget = InferenceWidget(viewer, persist=False)
        widget.image.value = viewer.layers["ct"]
        widget.model.value = {str(tiny_checkpoint)!r}
        widget.device.value, widget.precision.value = "cpu", "fp32"
        assert widget.run() is not None
        start = time.time()
        while widget.task.running and time.time() - start < 120:
            QApplication.processEvents()
            time.sleep(0.01)
        assert widget.last_result is not None and widget.last_result.complete, widget.log.value
        assert "torch" in sys.modules  # the job did import it
        print("GUI-thread torch imports:", on_gui_thread)
        viewer.close()
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "GUI-thread torch imports: []" in done.stdout, done.stdout


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
    # read from the checkpoint in the job, attached while the run goes on
    qtbot.waitUntil(
        lambda: widget.layer is not None and MODEL_POSTPROCESS in widget.layer.metadata, timeout=60000
    )
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
    qtbot.waitUntil(lambda: widget.layer is not None, timeout=60000)  # the job made the store
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
