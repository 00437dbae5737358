"""``napari-vesuvius demo``: the main job, headless, on the built-in synthetic sample.

``demo`` synthesizes a small challenge-style dataset, trains a tiny model briefly, predicts the test
volumes, cleans them up, exports ``submission.zip`` and scores it against the hidden test labels.
``demo --gui`` opens napari with the plugin's workbench docked and the synthetic sample loaded.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import napari

#: what ``demo`` writes in its work folder, and the file that marks a folder as a demo's
DEMO_OUTPUTS = ("dataset", "run", "submission.zip")
DEMO_MARKER = ".napari-vesuvius-demo"


def register(subparsers: argparse._SubParsersAction) -> None:
    from napari_vesuvius.core.demo import DemoSettings

    defaults = DemoSettings(workdir=Path("."))
    parser = subparsers.add_parser(
        "demo",
        help="run the whole pipeline on synthetic data (synthesize, train, predict, clean up, export, score)",
    )
    parser.add_argument(
        "--gui", action="store_true", help="open napari with the workbench docked and the sample"
    )
    parser.add_argument(
        "--workdir", type=Path, help="where to write the dataset, run and submission (default: temp)"
    )
    parser.add_argument("--size", type=int, default=defaults.shape[0], help="edge of the synthetic volumes")
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--iterations-per-epoch", type=int, default=defaults.iterations_per_epoch)
    parser.add_argument("--device", default=defaults.device, help="auto, cpu, cuda or mps")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier demo's dataset, run and submission in --workdir",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.gui:
        return run_gui()
    from napari_vesuvius.core.demo import DemoSettings, iter_demo
    from napari_vesuvius.core.progress import ConsoleProgress, run_job

    workdir = prepare_workdir(args.workdir, args.overwrite) if args.workdir else None
    workdir = workdir or Path(tempfile.mkdtemp(prefix="napari-vesuvius-demo-"))
    settings = DemoSettings(
        workdir=workdir,
        shape=(args.size,) * 3,
        epochs=args.epochs,
        iterations_per_epoch=args.iterations_per_epoch,
        device=args.device,
        seed=args.seed,
    )
    print(
        f"demo in {workdir}: {settings.n_train} train + {settings.n_test} test volumes of {args.size}³, "
        f"{settings.epochs} epochs × {settings.iterations_per_epoch} iterations "
        f"(patch {settings.patch_size}, batch {settings.batch_size}, model '{settings.model_preset}')",
        file=sys.stderr,
    )
    summary = run_job(iter_demo(settings), ConsoleProgress("demo"))
    if args.json:
        print(json.dumps(summary.to_dict(), indent=2))
        return 0
    print(f"\ndataset:     {summary.dataset}")
    print(f"model:       {summary.checkpoint}")
    print(f"submission:  {summary.submission}")
    clean_up = summary.settings.get("postprocess") or {}
    print(
        f"clean-up:    {summary.settings.get('postprocess_source', '')}: hysteresis "
        f"{clean_up.get('t_low')}/{clean_up.get('t_high')}, closing z{clean_up.get('closing_z')}/"
        f"xy{clean_up.get('closing_xy')}, dust < {clean_up.get('dust_size')}"
    )
    print(f"\n{'volume':>12} {'score':>7} {'topo':>7} {'surf.dice':>9} {'voi':>7}")
    for volume_id, terms in summary.scores.items():
        print(
            f"{volume_id:>12} {terms['score']:7.3f} {terms['topo']:7.3f} "
            f"{terms['surface_dice']:9.3f} {terms['voi_score']:7.3f}"
        )
    print(f"{'mean':>12} {summary.mean_score:7.3f}")
    print("\ntimings: " + ", ".join(f"{name} {seconds:.1f}s" for name, seconds in summary.timings.items()))
    return 0


def prepare_workdir(workdir: Path, overwrite: bool) -> Path:
    """Check (and create) ``--workdir``: what an earlier demo wrote there is replaced only with
    ``--overwrite``, and only when a demo made it (the marker file); anything else is never touched."""
    from napari_vesuvius.core.atomic import remove_path
    from napari_vesuvius.core.errors import OutputError
    from napari_vesuvius.core.outputs import check_output_folder

    check_output_folder(workdir)
    present = [name for name in DEMO_OUTPUTS if (workdir / name).exists()]
    if present:
        shown = ", ".join(present)
        if not (workdir / DEMO_MARKER).is_file():
            raise OutputError(workdir, f"holds {shown} not written by a demo: choose another --workdir")
        if not overwrite:
            raise OutputError(workdir, f"holds an earlier demo's {shown} (use --overwrite)")
        for name in present:
            remove_path(workdir / name)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / DEMO_MARKER).write_text("written by napari-vesuvius demo\n")
    return workdir


#: the workbench's entry in the manifest (``napari.yaml`` › widgets)
WORKBENCH = "Vesuvius workbench"


def open_gui() -> napari.Viewer:
    """A napari window with the synthetic sample loaded and the workbench docked (all steps as tabs)."""
    import napari

    viewer = napari.Viewer(title="napari-vesuvius demo")
    viewer.open_sample("napari-vesuvius", "synthetic_fragment")
    viewer.window.add_plugin_dock_widget("napari-vesuvius", WORKBENCH)
    return viewer


def run_gui() -> int:
    """Open napari with the workbench and the synthetic sample, until the window is closed."""
    import napari

    open_gui()
    napari.run()
    return 0
