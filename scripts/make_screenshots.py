"""Make the workbench screenshots of the user guide: one PNG per step of the scripted user journey.

napari at 1280×800 with the layer list and the workbench docked; a synthetic challenge dataset and an
untrained tiny checkpoint (written to a temporary folder) go through open → predict → tune → score →
proofread → retrain → export (``benchmarks/_journey.py``), and after each step the window is saved to
``docs/images/workbench-<step>.png`` (the Tune step also as ``screenshot.png``, the README's picture).
Each step's primary controls are checked to be visible without scrolling; problems are printed (and
make the exit status 1).

Run under a virtual display: ``xvfb-run -a -s "-screen 0 1920x1200x24" python scripts/make_screenshots.py``
(``--shape`` for the volume edge, ``--out`` for another folder). For pictures that mean something, pass
a trained checkpoint: ``napari-vesuvius demo`` trains one in a few minutes (``--model
<demo workdir>/run/checkpoint_best.pt``).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NAPARI_VESUVIUS_NO_SETTINGS", "1")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # benchmarks/ holds the journey shared with the test and the benchmark


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, default=96, help="edge of the synthetic volumes (96)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "images", help="folder for the PNGs")
    parser.add_argument("--steps", nargs="+", help="only these steps, in journey order (default: all)")
    parser.add_argument(
        "--model", type=Path, help="a trained checkpoint (e.g. the demo's run/checkpoint_best.pt); "
        "default: an untrained tiny one, whose probabilities are noise",
    )  # fmt: skip
    args = parser.parse_args()

    import napari
    from benchmarks._journey import STEPS, WINDOW, Journey, make_inputs, run_step, show_results

    args.out.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="vesuvius-screens-") as tmp:
        inputs = make_inputs(Path(tmp), shape=(args.shape,) * 3, checkpoint=args.model)
        viewer = napari.Viewer(title="napari-vesuvius")
        journey = Journey(viewer, inputs)
        try:
            journey.open_workbench()
            for name, what in STEPS:
                if args.steps and name not in args.steps:
                    continue
                start = time.perf_counter()
                tab = run_step(journey, name)
                problems += journey.controls_out_of_view(tab)
                width, height = journey.window_size()
                if width > WINDOW[0] or height > WINDOW[1]:
                    problems.append(f"{name}: the window grew to {width}×{height}")
                show_results(journey, name)
                path = journey.screenshot(args.out / f"workbench-{name.lower()}.png")
                if name == "Tune":
                    journey.screenshot(args.out / "screenshot.png")
                print(f"{name:<10} {what:<42} {time.perf_counter() - start:6.1f}s → {path}")
        finally:
            journey.stop_training()
            viewer.close()
    for problem in problems:
        print("PROBLEM:", problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
