"""The command line imports only the chosen subcommand's module; its table matches what they register."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

from napari_vesuvius.cli.main import COMMANDS, build_parser, chosen_command, main


def _subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction:
    (subparsers,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return subparsers


def _commands(parser: argparse.ArgumentParser) -> list[tuple[str, str | None]]:
    return [(action.dest, action.help) for action in _subparsers(parser)._choices_actions]


def test_table_matches_the_modules() -> None:
    """Every row's name, order and help line is what its module registers (no drift)."""
    assert _commands(build_parser()) == [(name, help_text) for name, _, help_text in COMMANDS]


@pytest.mark.parametrize("name", [name for name, _, _ in COMMANDS])
def test_the_chosen_command_is_complete(name: str) -> None:
    """Built for one command, the parser lists every command and gives that one its full options."""
    lazy, full = build_parser(name, all_commands=False), build_parser()
    assert _commands(lazy) == _commands(full)
    assert _subparsers(lazy).choices[name].format_help() == _subparsers(full).choices[name].format_help()


@pytest.mark.parametrize(
    ("argv", "command"),
    [([], None), (["--version"], None), (["-h"], None), (["score", "a", "b"], "score"), (["--", "x"], None)],
)
def test_chosen_command(argv: list[str], command: str | None) -> None:
    assert chosen_command(argv) == command


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    words = " ".join(out.split())
    for name, _, help_text in COMMANDS:
        assert f" {name} " in words and " ".join(help_text.split()[:4]) in words


def test_unknown_command_names_the_choices(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["nonsense"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'nonsense'" in err and "'choose-postprocess'" in err


def test_score_help_imports_only_score() -> None:
    code = (
        "import json, sys\n"
        "from napari_vesuvius.cli.main import main\n"
        "try:\n"
        "    main(['score', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "cli = [m for m in sys.modules if m.startswith('napari_vesuvius.cli.')]\n"
        "print(json.dumps(cli), file=sys.stderr)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "--topo-backend" in out.stdout
    loaded = json.loads(out.stderr.strip().splitlines()[-1])
    assert "napari_vesuvius.cli.score" in loaded
    assert not {"napari_vesuvius.cli.predict", "napari_vesuvius.cli.train", "napari_vesuvius.cli.demo"} & set(
        loaded
    )
