"""Entry point of the ``napari-vesuvius`` console script.

Each subcommand lives in its own module under ``napari_vesuvius.cli`` exposing
``register(subparsers)``; that function adds its parser and sets ``func`` (called with the parsed
namespace, returning an exit code). Add a new subcommand by adding a row to :data:`COMMANDS` (its
name, module and the one-line help its ``register`` gives; ``tests/test_cli_lazy.py`` checks they agree).

Only the chosen subcommand's module is imported (:func:`build_parser` with ``command``): the others
are listed in ``napari-vesuvius --help`` from the table alone, so a command does not pay for the
imports of the other ten (dask, zarr, training...).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from collections.abc import Sequence

from napari_vesuvius import __version__
from napari_vesuvius.core.errors import CancelledError, VesuviusError, VesuviusWarning

#: ``(command, module, one-line help)`` in ``--help`` order; a module may register several commands.
COMMANDS: tuple[tuple[str, str, str], ...] = (
    ("info", "info", "describe a volume (shape, dtype, chunks, label counts)"),
    (
        "demo",
        "demo",
        "run the whole pipeline on synthetic data (synthesize, train, predict, clean up, export, score)",
    ),
    ("score", "score", "leaderboard score (TopoScore, SurfaceDice, VOI) of predictions against labels"),
    ("predict", "predict", "surface probability of a volume or a folder of volumes (sliding window)"),
    ("init-model", "init_model", "write an untrained built-in U-Net checkpoint (random weights)"),
    ("postprocess", "postprocess", "threshold and clean up a probability volume into a {0,1} mask"),
    ("train", "train", "train or fine-tune a model in a run folder (resumable)"),
    ("finetune", "finetune", "fine-tune a model on corrected labels (proofreading)"),
    ("sweep", "sweep", "score a post-processing parameter over a grid of values (mean over volumes)"),
    (
        "choose-postprocess",
        "choose_postprocess",
        "choose a model's clean-up (hysteresis T_low, closing) on labelled validation volumes",
    ),
    ("submit", "submit", "predict, clean up and export every test volume into a validated submission.zip"),
    ("export", "submit", "validate masks already computed (<id>.tif) and zip them into submission.zip"),
)

#: The subcommand modules, in ``--help`` order.
COMMAND_MODULES: tuple[str, ...] = tuple(dict.fromkeys(module for _, module, _ in COMMANDS))


def chosen_command(argv: Sequence[str]) -> str | None:
    """The subcommand named in ``argv`` (the first argument that is not an option), else None.

    The top-level parser has no option taking a value, so the first non-option is the command."""
    for arg in argv:
        if arg == "--":
            return None
        if not arg.startswith("-"):
            return arg
    return None


def build_parser(command: str | None = None, *, all_commands: bool = True) -> argparse.ArgumentParser:
    """The ``napari-vesuvius`` parser.

    Every command's module is imported and registered unless ``all_commands`` is False: then only
    ``command``'s module is (when it is one), and the others get a placeholder parser with their help
    line, enough for the command list and the "invalid choice" message.
    """
    parser = argparse.ArgumentParser(
        prog="napari-vesuvius",
        description="Vesuvius Challenge surface detection: inspect, predict, clean up, score, export.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = {module for name, module, _ in COMMANDS if all_commands or name == command}
    registered: set[str] = set()
    for name, module, help_text in COMMANDS:
        if module not in wanted:
            subparsers.add_parser(name, help=help_text)
        elif module not in registered:
            registered.add(module)
            importlib.import_module(f"napari_vesuvius.cli.{module}").register(subparsers)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None):  # type: ignore[no-untyped-def]
    """Show :class:`VesuviusWarning` as one ``warning: ...`` line on stderr (others as Python does)."""
    if issubclass(category, VesuviusWarning):
        print(f"warning: {message}", file=sys.stderr)
    else:
        _python_show_warning(message, category, filename, lineno, file, line)


_python_show_warning = warnings.showwarning


def main(argv: Sequence[str] | None = None) -> int:
    warnings.showwarning = _show_warning
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(chosen_command(argv), all_commands=False)
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except CancelledError:
        print("cancelled", file=sys.stderr)
        return 130
    except VesuviusError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except OSError as error:  # missing file, permission, full or read-only disk ...: name the path
        from napari_vesuvius.core.outputs import os_error_message

        print(f"error: {os_error_message(error)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
