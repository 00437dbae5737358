"""Viewer tests for the Inference dock's out-of-distribution intensity warning.

The check itself is core's (``core/inference/ood.py``); here it is replaced by a recording fake so the
dock's behaviour is tested on its own: a shift shows a ⚠ line (message + remedy) and a notification and
the run goes on; a quiet check hides the line; the check runs on the worker thread, never the GUI's.
The last test uses the real check when it is installed.
"""

from __future__ import annotations

import importlib
import sys
import threading
import types
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

OOD_MODULE = "napari_vesuvius.core.inference.ood"


@dataclass(frozen=True)
class FakeShift:
    """The contract of core's ``IntensityShift``."""

    directions: tuple[str, ...]
    message: str
    remedy: str
    details: dict[str, Any] = field(default_factory=dict)


BRIGHTER = FakeShift(
    ("brighter",),
    "ct is much brighter than the training data (median 212 vs 118, +4.1 training IQRs)",
    "rescale the image, or fine-tune on a few labelled patches (Retrain)",
)


class FakeCheck:
    """Stands in for ``check_intensity``: returns ``result`` and records each call's thread and args."""

    def __init__(self, result: Any) -> None:
        self.result = result
        self.threads: list[threading.Thread] = []
        self.calls: list[tuple[Any, tuple[int, ...], str]] = []

    def __call__(self, model: Any, volume: Any, *, name: str = "") -> Any:
        self.threads.append(threading.current_thread())
        self.calls.append((model, tuple(np.shape(volume)), name))
        if isinstance(self.result, BaseException):
            raise self.result
        return self.result


def install(monkeypatch: pytest.MonkeyPatch, check: FakeCheck) -> None:
    """Make ``check`` the check the job imports (core's module when present, else a stand-in module)."""
    try:
        module = importlib.import_module(OOD_MODULE)
    except ImportError:
        module = types.ModuleType(OOD_MODULE)
        monkeypatch.setitem(sys.modules, OOD_MODULE, module)
    monkeypatch.setattr(module, "check_intensity", check, raising=False)


@pytest.fixture
def notifications(monkeypatch):
    """The napari warning notifications the dock shows (their messages)."""
    import napari.utils.notifications as notes

    shown: list[str] = []
    monkeypatch.setattr(notes, "show_warning", lambda message: shown.append(str(message)))
    return shown


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    import torch

    from napari_vesuvius.core.inference.checkpoint import save_checkpoint
    from napari_vesuvius.core.inference.model_api import Normalization
    from napari_vesuvius.core.inference.unet import build_unet, preset

    torch.manual_seed(0)
    config = preset("tiny")
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    save_checkpoint(path, build_unet(config), config, Normalization(), (32, 32, 32), {"note": "random"})
    return path


@pytest.fixture
def inference(make_napari_viewer, tiny_checkpoint):
    from napari_vesuvius.core.synthetic import make_fragment
    from napari_vesuvius.widgets.inference_widget import InferenceWidget

    viewer = make_napari_viewer()
    viewer.add_image(make_fragment((32, 40, 40), seed=2).image, name="ct")
    widget = InferenceWidget(viewer, persist=False)
    viewer.window.add_dock_widget(widget, name="Inference")
    widget.image.value = viewer.layers["ct"]
    widget.models.model.value = tiny_checkpoint
    widget.device.value = "cpu"
    widget.precision.value = "fp32"
    return viewer, widget


def run_and_wait(widget: Any, qtbot: Any) -> None:
    assert widget.run() is not None
    qtbot.waitUntil(lambda: not widget.task.running, timeout=60000)


def shown(widget: Any) -> bool:
    """Whether the ⚠ line is shown (``isHidden``: the test window itself may be off screen)."""
    return not widget.intensity.label.native.isHidden()


def test_a_shift_shows_the_warning_line_and_a_notification_and_the_run_goes_on(
    inference, qtbot, monkeypatch, notifications
):
    viewer, widget = inference
    check = FakeCheck(BRIGHTER)
    install(monkeypatch, check)
    run_and_wait(widget, qtbot)
    assert widget.last_result is not None and widget.last_result.complete  # informs, never stops
    assert "ct probability" in viewer.layers
    assert shown(widget)
    text = widget.intensity.label.value
    assert "⚠" in text and "<b>Brighter than the model's training data</b>" in text  # the headline
    assert BRIGHTER.message in text and "What to do: rescale the image" in text  # message and remedy
    assert widget.intensity.text == f"{BRIGHTER.message}\n{BRIGHTER.remedy}"
    assert widget.intensity.label.native.wordWrap()  # wraps in the narrow dock
    assert notifications == [BRIGHTER.message]
    # the check saw the loaded model and the whole image, named after the layer
    ((model, shape, name),) = check.calls
    assert type(model).__name__ == "InferenceModel"
    assert shape == viewer.layers["ct"].data.shape and name == "ct"


def test_the_check_runs_on_the_worker_thread(inference, qtbot, monkeypatch, notifications):
    _, widget = inference
    check = FakeCheck(None)
    install(monkeypatch, check)
    run_and_wait(widget, qtbot)
    assert len(check.threads) == 1
    assert check.threads[0] is not threading.main_thread()
    assert threading.current_thread() is threading.main_thread()  # the GUI thread ran the test


def test_a_quiet_check_hides_the_line(inference, qtbot, monkeypatch, notifications):
    _, widget = inference
    check = FakeCheck(BRIGHTER)
    install(monkeypatch, check)
    run_and_wait(widget, qtbot)
    assert shown(widget)
    check.result = None  # e.g. the user rescaled the image
    run_and_wait(widget, qtbot)
    assert not shown(widget) and widget.intensity.text == ""
    assert notifications == [BRIGHTER.message]  # the quiet run adds nothing


def test_a_second_run_with_the_same_shift_notifies_once(inference, qtbot, monkeypatch, notifications):
    _, widget = inference
    install(monkeypatch, FakeCheck(BRIGHTER))
    run_and_wait(widget, qtbot)
    run_and_wait(widget, qtbot)
    assert shown(widget) and notifications == [BRIGHTER.message]


def test_changing_the_image_or_the_model_clears_the_line(
    inference, qtbot, monkeypatch, notifications, tmp_path
):
    viewer, widget = inference
    install(monkeypatch, FakeCheck(BRIGHTER))
    run_and_wait(widget, qtbot)
    assert shown(widget)
    viewer.add_image(np.zeros((8, 8, 8), np.uint8), name="other")
    widget.image.value = viewer.layers["other"]
    assert not shown(widget)
    widget.image.value = viewer.layers["ct"]
    run_and_wait(widget, qtbot)
    assert shown(widget)
    widget.models.model.value = tmp_path / "another.pt"
    assert not shown(widget)


def test_a_failing_check_is_logged_and_the_run_goes_on(inference, qtbot, monkeypatch, notifications):
    _, widget = inference
    install(monkeypatch, FakeCheck(ValueError("no training intensities")))
    run_and_wait(widget, qtbot)
    assert widget.last_result is not None and widget.last_result.complete
    assert "intensity check skipped: ValueError: no training intensities" in widget.log.value
    assert not shown(widget) and notifications == []


def test_an_ensemble_names_the_models_and_shows_each_message_once(
    inference, qtbot, monkeypatch, notifications, tiny_checkpoint
):
    _, widget = inference
    install(monkeypatch, FakeCheck(BRIGHTER))
    widget.add_member()
    widget.add_member()  # the same checkpoint twice: one message, not two
    assert len(widget.models.members) == 2
    run_and_wait(widget, qtbot)
    assert widget.intensity.label.value.count(BRIGHTER.message) == 1
    assert notifications == [BRIGHTER.message]


def test_the_headline_names_every_direction():
    from napari_vesuvius.widgets._inference_ood import headline

    shift = FakeShift(("darker", "lower contrast"), "m", "r")
    assert headline(shift) == "Darker and lower contrast than the model's training data"
    assert headline(FakeShift(("a", "b", "c"), "m", "r")).startswith("A, b and c than")


def test_the_line_takes_the_theme_warning_colour(inference, qtbot, monkeypatch, notifications):
    from napari.utils.theme import get_theme

    viewer, widget = inference
    install(monkeypatch, FakeCheck(BRIGHTER))
    viewer.theme = "light"
    run_and_wait(widget, qtbot)
    colour = get_theme("light").warning.as_hex()[:7]
    assert colour in widget.intensity.label.native.styleSheet()
    assert colour in widget.intensity.label.value  # the ⚠ sign


@pytest.mark.slow
def test_the_real_check_warns_on_a_brightened_copy_and_not_on_the_original(
    make_napari_viewer, qtbot, tmp_path, notifications
):
    """With core's check: a checkpoint carrying its training profile, run on the image and a 2× copy."""
    ood = pytest.importorskip(OOD_MODULE)
    import torch

    from napari_vesuvius.core.inference.checkpoint import save_checkpoint
    from napari_vesuvius.core.inference.model_api import Normalization
    from napari_vesuvius.core.inference.unet import build_unet, preset
    from napari_vesuvius.core.synthetic import make_fragment
    from napari_vesuvius.widgets.inference_widget import InferenceWidget

    image = make_fragment((32, 40, 40), seed=3).image
    torch.manual_seed(0)
    config = preset("tiny")
    path = tmp_path / "profiled.pt"
    profile = ood.training_profile([image]).to_dict()
    save_checkpoint(
        path, build_unet(config), config, Normalization(), (32, 32, 32), {"training_intensity": profile}
    )
    viewer = make_napari_viewer()
    viewer.add_image(image, name="ct")
    brighter = np.clip(image.astype(np.float32) * 2.0 + 40, 0, 255).astype(np.uint8)
    viewer.add_image(brighter, name="ct brighter")
    widget = InferenceWidget(viewer, persist=False)
    viewer.window.add_dock_widget(widget, name="Inference")
    widget.models.model.value = path
    widget.device.value, widget.precision.value = "cpu", "fp32"
    widget.image.value = viewer.layers["ct"]
    run_and_wait(widget, qtbot)
    assert not shown(widget) and notifications == []
    widget.image.value = viewer.layers["ct brighter"]
    run_and_wait(widget, qtbot)
    assert shown(widget) and "brighter" in widget.intensity.text
    assert len(notifications) == 1


@pytest.mark.slow
def test_the_block_wise_run_checks_too(make_napari_viewer, qtbot, monkeypatch, notifications, tmp_path):
    import zarr
    from distributed import LocalCluster

    from inference_helpers import TEST_CONFIG, scan_volume, tiny_network
    from napari_vesuvius._reader import layer_data
    from napari_vesuvius.core.inference.checkpoint import save_checkpoint
    from napari_vesuvius.core.inference.model_api import Normalization
    from napari_vesuvius.core.volume.io import open_volume
    from napari_vesuvius.widgets.inference_widget import InferenceWidget
    from scroll_helpers import one_torch_thread

    check = FakeCheck(BRIGHTER)
    install(monkeypatch, check)
    volume = np.zeros((40, 64, 64), np.uint8)
    volume[4:36, 4:60, 4:60] = scan_volume((32, 56, 56), seed=4)
    zarr.create_array(store=str(tmp_path / "scan.zarr"), data=volume, chunks=(32, 32, 32))
    checkpoint = save_checkpoint(
        tmp_path / "tiny.pt", tiny_network(0), TEST_CONFIG, Normalization(), (32,) * 3
    )
    viewer = make_napari_viewer()
    data, meta, _ = layer_data(open_volume(tmp_path / "scan.zarr"))
    viewer.add_image(data, **meta)
    widget = InferenceWidget(viewer, persist=False)
    viewer.window.add_dock_widget(widget, name="Inference")
    widget.image.value = viewer.layers["scan"]
    widget.models.model.value = checkpoint
    widget.device.value, widget.precision.value = "cpu", "fp32"
    widget.cluster.value = True
    widget.output_zarr.value = tmp_path / "pred.zarr"
    with (
        one_torch_thread(),
        LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster,
    ):
        widget.scheduler.value = cluster.scheduler_address
        run_and_wait(widget, qtbot)
    assert widget.task.last_error is None and widget.last_result.complete  # the run went on
    assert shown(widget) and notifications == [BRIGHTER.message]
    assert check.threads[0] is not threading.main_thread()
    assert check.calls[0][1:] == (volume.shape, "scan")
