"""The scripted user journey at 1280×800 (benchmarks/_journey.py; scripts/make_screenshots.py shares it):
open a dataset → predict → tune → score → proofread (paint, save) → retrain briefly → export. After every
step the window is still 1280×800 with the layer list visible, and each of the step's primary controls
lies wholly inside its tab's viewport at the top scroll position (visible without scrolling)."""

from __future__ import annotations

import os
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchmarks/ is a package at the root
from benchmarks._journey import STEPS, WINDOW, Journey, make_inputs, run_step

SHAPE = (48, 48, 48)


@pytest.fixture
def journey(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer(show=True)
    journey = Journey(viewer, make_inputs(tmp_path, shape=SHAPE, n_train=2, n_test=1, patch=32))
    journey.open_workbench()
    yield journey
    journey.stop_training()


def _fit_problems(journey: Journey, tab: str) -> list[str]:
    """What does not fit after a step: a grown window, a hidden layer list, primary controls out of view."""
    problems = []
    width, height = journey.window_size()
    if width > WINDOW[0] or height > WINDOW[1]:
        problems.append(f"{tab}: the window grew to {width}×{height}")
    if not journey.layer_list_visible():
        problems.append(f"{tab}: the layer list is hidden")
    return problems + journey.controls_out_of_view(tab)


@pytest.mark.slow
@pytest.mark.skipif(os.name == "nt", reason="the fine-tuning process is stopped with POSIX signals")
def test_user_journey_fits_1280x800(journey):
    assert journey.window_size() == WINDOW
    tabs = journey.workbench.tabs
    titles = [tabs.tabText(index) for index in range(tabs.count())]
    assert [name for name, _ in STEPS if name != "Retrain"] == [t for t in titles if t != "Train"]

    problems: list[str] = []  # collected over the whole journey, so one run reports every step
    for name, _ in STEPS:
        tab = run_step(journey, name)
        problems += _fit_problems(journey, tab)
        if name == "Data":  # every tab fits, the ones the journey does not use included
            for title in titles:
                problems += _fit_problems(journey, title)

    # each step really did its work
    inputs = journey.inputs
    assert tuple(journey.image.data.shape) == SHAPE and journey.labels is not None
    probability = np.asarray(journey.probability.data)
    assert probability.shape == SHAPE and 0.0 <= float(probability.min()) <= float(probability.max()) <= 1.0
    mask = np.asarray(journey.mask.data)
    assert mask.shape == SHAPE and set(np.unique(mask)) <= {0, 1}
    score = journey.step("Score").last_score.score
    assert 0.0 <= score <= 1.0
    proofread = journey.step("Proofread")
    assert proofread.session is not None and not proofread.dirty
    versions = list(Path(proofread.target.value).parent.glob("*v001*"))
    assert versions, "Save version wrote no file"
    retrain = proofread.retrain
    assert retrain.new_layer is not None and tuple(retrain.new_layer.data.shape) == SHAPE
    with zipfile.ZipFile(journey.submission) as archive:
        names = {Path(name).stem for name in archive.namelist()}
    assert names == set(inputs.test_ids)
    assert not problems, "\n".join(problems)  # last: a step that fails its work is reported first
