"""Benchmark the workbench's responsiveness: GUI-thread gaps per action, Tune preview latency, GUI vs CLI.

napari at 1280×800 under Xvfb with the workbench docked goes through the user journey
(``benchmarks/_journey.py``) on a synthetic challenge dataset and an untrained tiny checkpoint while
``_gui_monitor.GuiMonitor`` watches the GUI thread (a 20 ms timer; a stack sampler attributes each gap
over 100 ms to the plugin, to napari's rendering / event handling, to gc or to other code). Measured:

* per action (open workbench, open dataset, Data next/previous, first and later inference run, Tune
  slider changes, Apply, Score, Proofread accept/paint/save, Retrain start, Export): the largest
  GUI-thread gap and its cause, and how many gaps over 100 ms the plugin caused;
* Tune slider-to-preview latency on a ``--size``³ probability: time from setting the slider to the
  preview layer's data changing, median and max over ``--changes`` slider changes;
* GUI vs CLI inference on the same ``--predict-size``³ volume and model: the Predict tab's Run until
  the result is in the layer, vs ``napari-vesuvius predict`` (a subprocess; its own timing of the
  sliding window, which excludes process start and model loading), and how often the probability
  layer updated during the GUI run.

Run: ``xvfb-run -a -s "-screen 0 1920x1200x24" python benchmarks/bench_gui.py`` (sizes 320 / 160 / 96:
tens of minutes on 2 cores; run it alone); ``--quick`` for a smoke test (small sizes, not written to
docs/benchmarks.md unless ``--write``).
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("NAPARI_VESUVIUS_NO_SETTINGS", "1")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks._gui_monitor import Gap, GuiMonitor  # noqa: E402
from benchmarks._journey import Journey, JourneyInputs, make_inputs, process_events, wait_until  # noqa: E402
from benchmarks._journey_support import idle  # noqa: E402

GAP_TARGET_MS = 100
PREVIEW_TARGET_MS = 100
GUI_CLI_TARGET = 1.15
#: after each action the event loop runs this long, so stalls that follow it (rendering) are caught
SETTLE_MS = 600


class Bench:
    """The viewer, the journey and the monitor, and the rows measured so far."""

    def __init__(self, viewer: Any, inputs: JourneyInputs, monitor: GuiMonitor) -> None:
        self.viewer = viewer
        self.journey = Journey(viewer, inputs)
        self.monitor = monitor
        self.rows: list[list[object]] = []
        #: seconds each action took until it returned (without the settling after it)
        self.elapsed: dict[str, float] = {}

    def action(self, name: str, run: Any) -> Any:
        """Run one action (returns its result), settle, and add its row."""
        start = time.perf_counter()
        with self.monitor.action(name):
            result = run()
            elapsed = self.elapsed[name] = time.perf_counter() - start
            process_events(SETTLE_MS)
        self.rows.append(self._row(name, elapsed))
        print(f"  {name}: {elapsed:.2f}s, {self.rows[-1][2]}", flush=True)
        return result

    def _row(self, name: str, elapsed: float) -> list[object]:
        gaps = self.monitor.gaps(name)
        largest: Gap | None = self.monitor.largest_gap(name)
        span = self.monitor.action_span(name)
        longest = self.monitor.largest_interval(*span) if span else 0.0
        plugin = sum(1 for gap in gaps if gap.cause == "plugin")
        cause = f"none over {GAP_TARGET_MS} ms" if largest is None else largest.describe(with_time=False)
        ok = "✓" if plugin == 0 else "✗"
        longest = max(longest, largest.seconds if largest is not None else 0.0)
        return [name, round(1000 * longest), cause, f"{plugin} / {len(gaps)}", f"{elapsed:.2f}", ok]


# -- measurements ----------------------------------------------------------------------------------
def journey_actions(bench: Bench) -> None:
    """Every action of the journey, each measured (retraining is started, then stopped)."""
    journey = bench.journey
    bench.action("open workbench", journey.open_workbench)
    bench.action("open dataset", journey.open_dataset)
    bench.action("Data next", lambda: journey.next_volume(+1))
    bench.action("Data previous", lambda: journey.next_volume(-1))
    bench.action("Data next (again)", lambda: journey.next_volume(+1))
    bench.action("Data previous (again)", lambda: journey.next_volume(-1))
    bench.action("Inference: first run", journey.predict)
    bench.action("Inference: later run", journey.predict)
    journey.tune_select()
    process_events(SETTLE_MS)
    bench.action("Tune: slider change", lambda: _slider_changes(journey, 3))
    bench.action("Tune: Apply", journey.tune_apply)
    bench.action("Score", journey.score)
    bench.action("Proofread: accept", journey.proofread_accept)
    bench.action("Proofread: paint", journey.proofread_paint)
    bench.action("Proofread: save", journey.proofread_save)
    bench.action(
        "Retrain: start", lambda: (journey.retrain_start(epochs=1, iterations=2), process_events(3000))
    )
    journey.stop_training()
    bench.action("Export", journey.export)


def _slider_changes(journey: Journey, changes: int, pause_ms: int = 300) -> list[float]:
    """Move the Tune slider ``changes`` times; seconds from each change to the preview's data changing."""
    slider = journey.tune_slider()
    latencies = []
    base = float(slider.value)
    for index in range(changes):
        value = round(
            min(slider.max, max(slider.min, base + (index % 2 * 2 - 1) * (index + 1) * slider.step)), 4
        )
        if value == slider.value:
            value = round(value + slider.step, 4)
        before = _preview_state(journey)
        start = time.perf_counter()
        slider.value = value
        wait_until(lambda before=before: _preview_state(journey) != before, 60, "the preview to change")
        latencies.append(time.perf_counter() - start)
        process_events(pause_ms)
    return latencies


def _preview_state(journey: Journey) -> tuple[int, int]:
    layer = journey.preview_layer()
    return (0, 0) if layer is None else (id(layer), id(layer.data))


def tune_latency(bench: Bench, size: int, changes: int) -> list[float]:
    """Slider-to-preview latencies on a ``size``³ float16 probability (a separate pair of layers)."""
    from benchmarks.bench_postprocess import make_probabilities

    journey = bench.journey
    prob = make_probabilities(size)
    ct = np.full(prob.shape, 128, np.uint8)
    ct[:, :, : size // 16] = 0  # outside the scan: the scan mask is not trivial
    saved = journey.probability, journey.image
    prob_layer = bench.viewer.add_image(prob, name=f"bench {size}³ probability", contrast_limits=(0, 1))
    ct_layer = bench.viewer.add_image(ct, name=f"bench {size}³ CT")
    bench.viewer.dims.set_current_step(0, size // 2)
    journey.probability, journey.image = prob_layer, ct_layer
    process_events(SETTLE_MS)
    bench.action(f"Tune: choose a {size}³ probability", journey.tune_select)
    latencies = bench.action(
        f"Tune: {changes} slider changes on {size}³", lambda: _slider_changes(journey, changes)
    )
    for layer in (journey.preview_layer(), prob_layer, ct_layer):
        if layer is not None and layer in bench.viewer.layers:
            bench.viewer.layers.remove(layer)
    journey.probability, journey.image = saved
    # the exact whole-volume refinement of the last settings may still run: let it end, so the next
    # measurement (GUI vs CLI inference) does not share the two cores with it
    tune = journey.step("Tune")
    wait_until(lambda: idle(tune), 600, "the Tune step's background work to end")
    process_events(SETTLE_MS)
    return latencies


def gui_vs_cli(bench: Bench, inputs: JourneyInputs, size: int) -> dict[str, float]:
    """The same volume and model through the Predict tab and through ``napari-vesuvius predict``."""
    from napari_vesuvius.core.synthetic import make_fragment
    from napari_vesuvius.core.synthetic.dataset import write_volume_tif

    volume_path = inputs.workdir / f"predict_{size}.tif"
    write_volume_tif(volume_path, make_fragment((size,) * 3, seed=11).image)

    # CLI first (nothing else runs): its own timing of the sliding window, and the process's wall time
    output = inputs.workdir / f"predict_{size}_cli.tif"
    command = [
        sys.executable, "-m", "napari_vesuvius.cli.main", "predict", "--model", str(inputs.checkpoint),
        "--input", str(volume_path), "--output", str(output), "--device", "cpu", "--quiet",
    ]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    cli_wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"CLI predict failed: {done.stderr[-2000:]}")
    found = re.search(r" in ([0-9.]+)s", done.stdout + done.stderr)
    cli_engine = float(found.group(1)) if found else float("nan")

    # GUI: the Predict tab's Run on the same volume, opened as a layer, until the result is in it
    journey = bench.journey
    from napari_vesuvius._reader import napari_get_reader

    layer_data = napari_get_reader(str(volume_path))(str(volume_path))[0]
    image = bench.viewer.add_image(layer_data[0], **{**layer_data[1], "name": f"predict {size}³"})
    process_events(SETTLE_MS)
    updates: list[float] = []

    def watch(event: Any) -> None:
        layer = event.value
        if "probability" in layer.name:
            layer.events.set_data.connect(lambda *_: updates.append(time.perf_counter()))

    bench.viewer.layers.events.inserted.connect(watch)
    saved = journey.image
    journey.image = image
    name = f"Inference: {size}³ (GUI vs CLI)"
    start = time.perf_counter()
    try:
        bench.action(name, journey.predict)
    finally:
        bench.viewer.layers.events.inserted.disconnect(watch)
        journey.image = saved
    gui_wall = bench.elapsed[name]  # Run → the result in the layer (the tab switch before it is instant)
    predict = journey.step("Predict")
    result = getattr(predict, "last_result", None)
    gui_engine = float(getattr(result, "elapsed_s", float("nan")))
    moments = [start, *[t for t in updates if t >= start], start + gui_wall]
    return {
        "gui_wall": gui_wall, "gui_engine": gui_engine, "cli_engine": cli_engine, "cli_wall": cli_wall,
        "updates": float(len([t for t in updates if t >= start])),
        "max_update_interval": max(b - a for a, b in itertools.pairwise(moments)),
    }  # fmt: skip


# -- report ----------------------------------------------------------------------------------------
def report(
    bench: Bench, latencies: list[float], inference: dict[str, float], args: argparse.Namespace
) -> str:
    from benchmarks._report import markdown_table

    gap_table = markdown_table(
        ["action", "largest GUI gap (ms)",
         "largest gap > 100 ms: cause in innermost plugin frame (→ running frame) [shares]",
         "plugin / all gaps > 100 ms", "action (s)", f"no plugin gap > {GAP_TARGET_MS} ms"],
        bench.rows,
    )  # fmt: skip
    ms = [1000 * value for value in latencies]
    preview_ok = "✓" if ms and max(ms) <= PREVIEW_TARGET_MS else "✗"
    preview_table = markdown_table(
        ["probability", "slider changes", "median (ms)", "max (ms)", f"target ≤ {PREVIEW_TARGET_MS} ms"],
        [
            [
                f"{args.size}³ float16",
                len(ms),
                statistics.median(ms) if ms else "",
                max(ms, default=""),
                preview_ok,
            ]
        ],
    )
    ratio = inference["gui_wall"] / inference["cli_engine"]
    inference_table = markdown_table(
        ["volume", "GUI Run → result (s)", "GUI sliding window (s)", "CLI sliding window (s)",
         "CLI process (s)", "GUI / CLI", "layer updates", "longest without update (s)",
         f"target ≤ {GUI_CLI_TARGET}×"],
        [[f"{args.predict_size}³ uint8", inference["gui_wall"], inference["gui_engine"],
          inference["cli_engine"], inference["cli_wall"], f"{ratio:.2f}×", int(inference["updates"]),
          inference["max_update_interval"], "✓" if ratio <= GUI_CLI_TARGET else "✗"]],
    )  # fmt: skip
    return (
        f"napari at 1280×800 under Xvfb, the workbench docked, a synthetic dataset of {args.volume}³ volumes "
        f"and an untrained tiny checkpoint (patch {args.patch}), CPU. A *gap* is an interval of a 20 ms "
        "timer on the GUI thread (the window does not respond for that long); gaps over 100 ms are "
        "attributed by sampling the GUI thread's stack every 5 ms: *plugin* (a `napari_vesuvius` frame on "
        "the stack, innermost one named), *napari* (napari / vispy / Qt frames only, or Qt's C++ event "
        "loop: rendering), *gc*, *other*; *GUI thread on CPU* is the share of the gap the GUI thread "
        "spent computing (low: it waited for the GIL, a lock, or a loaded machine). Each action is "
        "followed by 0.6 s of idle event loop, included. "
        "Target: no plugin gap over 100 ms.\n\n"
        f"{gap_table}\n\n**Tune slider → 2D preview** (time from setting the slider to the preview layer's "
        f"data changing):\n\n{preview_table}\n\n**GUI vs CLI inference** (same volume, model and settings; "
        "GUI: the Predict tab's Run until the result is in the layer, model loading included; CLI: "
        "`napari-vesuvius predict`'s own timing of the sliding window, process start and model loading "
        f"excluded):\n\n{inference_table}\n"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=320, help="edge of the Tune probability volume (320)")
    parser.add_argument("--predict-size", type=int, default=160, help="edge of the GUI-vs-CLI volume (160)")
    parser.add_argument("--volume", type=int, default=96, help="edge of the dataset's volumes (96)")
    parser.add_argument("--patch", type=int, default=64, help="patch edge of the tiny checkpoint (64)")
    parser.add_argument("--changes", type=int, default=10, help="Tune slider changes to time (10)")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test of the benchmark")
    parser.add_argument("--write", action="store_true", help="with --quick: still write docs/benchmarks.md")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args()
    if args.quick:
        args.size, args.predict_size, args.volume, args.patch, args.changes = 64, 48, 48, 32, 4

    import napari

    from benchmarks._report import write_section

    with tempfile.TemporaryDirectory(prefix="vesuvius-bench-gui-") as tmp:
        inputs = make_inputs(Path(tmp), shape=(args.volume,) * 3, n_train=2, n_test=1, patch=args.patch)
        viewer = napari.Viewer(title="napari-vesuvius", show=True)
        process_events(500)
        monitor = GuiMonitor()
        bench = Bench(viewer, inputs, monitor)
        try:
            with monitor:
                print("journey:", flush=True)
                journey_actions(bench)
                print(f"Tune latency on {args.size}³:", flush=True)
                latencies = tune_latency(bench, args.size, args.changes)
                print(f"GUI vs CLI inference on {args.predict_size}³:", flush=True)
                inference = gui_vs_cli(bench, inputs, args.predict_size)
        finally:
            bench.journey.stop_training()
            viewer.close()
    body = report(bench, latencies, inference, args)
    command = "xvfb-run -a python benchmarks/bench_gui.py" + (" --quick" if args.quick else "")
    if args.no_write or (args.quick and not args.write):
        print(body)
    else:
        write_section("gui", "GUI responsiveness (workbench at 1280×800)", body, command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
