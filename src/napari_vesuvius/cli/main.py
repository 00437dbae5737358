"""Entry point of the ``napari-vesuvius`` console script.

Each subcommand lives in its own module under ``napari_vesuvius.cli`` exposing
``register(subparsers)``; that function adds its parser and sets ``func`` (called with the parsed
namespace, returning an exit code). Add a new subcommand by adding its module name below.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from collections.abc import Sequence

from napari_vesuvius import __version__
from napari_vesuvius.core.errors import CancelledError, VesuviusError, VesuviusWarning

COMMAND_MODULES: tuple[str, ...] = (
    "info",
    "demo",
    "score",
    "predict",
    "init_model",
    "postprocess",
    "train",
    "finetune",
    "sweep",
    "choose_postprocess",
    "submit",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="napari-vesuvius",
        description="Vesuvius Challenge surface detection: inspect, predict, clean up, score, export.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"napari_vesuvius.cli.{name}").register(subparsers)
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
    parser = build_parser()
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
