"""Support for the scripted user journey (``_journey.py``): its inputs and waiting with Qt's event loop.

:func:`make_inputs` writes a synthetic challenge dataset and a tiny built-in checkpoint;
:func:`wait_until` runs the event loop until a condition holds (thread-worker results, timers and
painting go on meanwhile); :func:`idle` tells whether a step widget's background jobs are done.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: seconds a step may take on a loaded 2-core machine (the retrain subprocess imports torch)
STEP_TIMEOUT_S = 900.0


# -- inputs ----------------------------------------------------------------------------------------
@dataclass
class JourneyInputs:
    """A synthetic challenge dataset and a tiny built-in checkpoint, written under ``workdir``."""

    root: Path
    checkpoint: Path
    workdir: Path
    train_ids: list[str]
    test_ids: list[str]


def make_inputs(
    workdir: Path,
    shape: tuple[int, int, int] = (64, 64, 64),
    n_train: int = 2,
    n_test: int = 1,
    patch: int = 32,
    checkpoint: Path | None = None,
) -> JourneyInputs:
    """Write the dataset (``workdir/dataset``) and an untrained tiny checkpoint (``workdir/tiny.pt``),
    or use ``checkpoint`` (e.g. one trained by ``napari-vesuvius demo``: its predictions mean something)."""
    import contextlib
    import io

    from napari_vesuvius.cli.main import main
    from napari_vesuvius.core.synthetic.dataset import write_challenge_dataset

    workdir = Path(workdir)
    layout = write_challenge_dataset(workdir / "dataset", n_train=n_train, n_test=n_test, shape=shape, seed=3)
    if checkpoint is None:
        checkpoint = workdir / "tiny.pt"
        args = [
            "init-model",
            "--preset",
            "tiny",
            "--patch-size",
            *[str(patch)] * 3,
            "--output",
            str(checkpoint),
        ]
        with contextlib.redirect_stdout(io.StringIO()):
            if main(args) != 0:
                raise RuntimeError(f"init-model failed for {checkpoint}")
    return JourneyInputs(
        layout.root,
        checkpoint,
        workdir,
        [str(i) for i in layout.train_ids],
        [str(i) for i in layout.test_ids],
    )


# -- Qt helpers ------------------------------------------------------------------------------------
def process_events(ms: int = 10) -> None:
    """Run the Qt event loop for ``ms`` milliseconds (timers, painting, thread-worker signals)."""
    from qtpy.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    QTimer.singleShot(ms, loop.quit)
    loop.exec()


def wait_until(condition: Callable[[], Any], timeout_s: float = STEP_TIMEOUT_S, what: str = "") -> float:
    """Run the event loop until ``condition()`` is true; returns the seconds waited (TimeoutError)."""
    start = time.perf_counter()
    while not condition():
        if time.perf_counter() - start > timeout_s:
            raise TimeoutError(f"gave up after {timeout_s:.0f}s waiting for {what or condition}")
        process_events(5)
    return time.perf_counter() - start


def _task_runners(widget: Any, depth: int = 2) -> list[Any]:
    """The TaskRunners of a step widget and of its own panels (plugin containers, one level down)."""
    from magicgui.widgets import Container

    from napari_vesuvius.widgets._background import TaskRunner

    found = []
    for value in vars(widget).values():
        if isinstance(value, TaskRunner):
            found.append(value)
        elif (
            depth > 1
            and isinstance(value, Container)
            and type(value).__module__.startswith("napari_vesuvius")
        ):
            found.extend(_task_runners(value, depth - 1))
    return found


def idle(widget: Any) -> bool:
    """No background job of ``widget`` is running (nor waiting to run: a step's ``busy``)."""
    if getattr(widget, "busy", False) is True:
        return False
    return not any(runner.running for runner in _task_runners(widget))
