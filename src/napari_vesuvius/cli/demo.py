"""``napari-vesuvius demo``: the main job, headless, on the built-in synthetic sample."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="run the pipeline on the synthetic sample and print a summary")
    parser.add_argument("--gui", action="store_true", help="open napari with the plugin docked and the sample")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    raise NotImplementedError
