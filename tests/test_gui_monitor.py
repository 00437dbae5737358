"""The GUI-thread stall monitor (benchmarks/_gui_monitor.py): a blocking call on the GUI thread is found
and attributed to the function that made it; napari's own frames are told apart from the plugin's."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchmarks/ is a package at the root
from benchmarks._gui_monitor import GuiMonitor

FAKE_PLUGIN = "fake_plugin_for_monitor"


def _module(name: str, source: str) -> types.ModuleType:
    """A module named ``name`` (so its frames carry that ``__name__``) holding ``source``."""
    module = types.ModuleType(name)
    exec(compile(source, f"<{name}>", "exec"), module.__dict__)
    return module


@pytest.fixture
def stalls() -> types.ModuleType:
    return _module(
        f"{FAKE_PLUGIN}.steps",
        "import time\n\ndef slow_step():\n    time.sleep(0.3)\n\ndef quick_step():\n    return 1\n",
    )


def test_stall_in_plugin_function_is_attributed_to_it(qtbot, stalls):
    from qtpy.QtCore import QTimer

    with GuiMonitor(plugin_modules=(FAKE_PLUGIN,)) as monitor:
        qtbot.wait(100)
        with monitor.action("slow"):
            QTimer.singleShot(20, stalls.slow_step)
            qtbot.wait(600)
    gap = monitor.largest_gap()
    assert gap is not None and gap.seconds >= 0.3
    assert gap.cause == "plugin" and gap.where == f"{FAKE_PLUGIN}.steps:slow_step"
    assert gap.samples > 0 and gap.shares["plugin"] > 0.5
    assert gap.action == "slow" and monitor.largest_gap("slow") is gap
    assert monitor.largest_gap("another action") is None
    assert "plugin" in gap.describe() and "slow_step" in gap.describe()
    if sys.platform.startswith("linux"):  # a sleeping GUI thread uses no CPU: it waited, it did not compute
        assert gap.gui_cpu is not None and gap.gui_cpu < 0.5


def test_no_stall_no_plugin_gap(qtbot, stalls):
    from qtpy.QtCore import QTimer

    with GuiMonitor(plugin_modules=(FAKE_PLUGIN,)) as monitor:
        for delay in range(0, 400, 40):
            QTimer.singleShot(delay, stalls.quick_step)
        qtbot.wait(500)
    assert len(monitor.ticks) > 5  # the timer ran
    # a loaded machine may delay the event loop, but nothing the (quick) plugin code did
    assert [gap for gap in monitor.gaps() if gap.cause == "plugin"] == []


def test_stall_in_napari_code_is_napari(qtbot):
    from qtpy.QtCore import QTimer

    rendering = _module("vispy.fake_rendering", "import time\n\ndef draw():\n    time.sleep(0.25)\n")
    with GuiMonitor(plugin_modules=(FAKE_PLUGIN,)) as monitor:
        QTimer.singleShot(20, rendering.draw)
        qtbot.wait(500)
    gap = monitor.largest_gap()
    assert gap is not None and gap.cause == "napari" and gap.where == "vispy.fake_rendering:draw"


def test_classify_prefers_the_innermost_plugin_frame():
    monitor = GuiMonitor()
    stack = [
        ("numpy.core", "asarray"),
        ("napari_vesuvius.widgets.tune_widget", "_scan_mask_for"),
        ("napari_vesuvius.widgets.tune_widget", "update_preview"),
        ("napari.utils.events", "__call__"),
    ]
    assert monitor.classify(stack, in_loop=False) == (
        "plugin",
        "napari_vesuvius.widgets.tune_widget:_scan_mask_for",
    )
    assert monitor.classify(stack[3:], in_loop=False) == ("napari", "napari.utils.events:__call__")
    assert monitor.classify([("bench", "main")], in_loop=True)[0] == "napari"  # Qt's C++ under the loop
    assert monitor.classify([("bench", "make_data")], in_loop=False) == ("other", "bench:make_data")
    # module prefixes match whole names only
    assert monitor.classify([("napari_vesuvius_extra", "f")], in_loop=False)[0] == "other"
