"""The training benchmark (benchmarks/bench_training.py + _training_eval.py): its test set spans every
combination of the sub-range tags, its recipe options build the intended AugmentConfig, and a tiny run
end to end prints every sub-range row with the blur + Otsu baseline and the three verdict lines."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # benchmarks/ is a package at the root
from benchmarks import _training_eval as ev  # noqa: E402
from benchmarks.bench_training import augment_config, parse_args  # noqa: E402

from napari_vesuvius.core.synthetic import SUBRANGE_AXES  # noqa: E402
from napari_vesuvius.core.training.config import AugmentConfig  # noqa: E402

ROWS = [f"{axis}={value}" for axis, values in SUBRANGE_AXES.items() for value in values]


def test_test_set_spans_every_combination_of_subranges() -> None:
    volumes = ev.test_set(repeats=2)
    randomised = [v for v in volumes if v.kind == "randomised"]
    combos = [tuple(v.subranges[axis] for axis in SUBRANGE_AXES) for v in randomised]
    assert len(randomised) == 2 * 8 and len(set(combos)) == 8
    assert all(combos.count(c) == 2 for c in set(combos))
    assert len({v.seed for v in randomised}) == len(randomised) and min(v.seed for v in randomised) == 1000
    assert [v.seed for v in volumes if v.kind == "original"] == list(ev.ORIGINAL_SEEDS)


def test_forced_tags_reach_the_generated_volume() -> None:
    volume = ev.test_set()[0]
    fragment = volume.make((24, 24, 24))
    assert fragment.metadata["subranges"] == volume.subranges


def test_augment_options_build_the_config() -> None:
    args = parse_args(
        ["--augment", "nnunet", "--augment-set", "p_blur=0.5", "--augment-set", "gamma_range=[0.6,1.6]"]
    )
    augment = augment_config(args)
    nnunet = AugmentConfig.nnunet()
    assert augment.brightness_range == nnunet.brightness_range == (0.75, 1.25)
    assert augment.p_low_resolution == nnunet.p_low_resolution and augment.p_shift == 0.0
    assert augment.p_blur == 0.5 and augment.gamma_range == (0.6, 1.6)
    with pytest.raises(ValueError, match="unknown augmentation settings"):
        augment_config(parse_args(["--augment-set", "p_nothing=1"]))


@pytest.mark.slow
def test_tiny_run_reports_every_subrange_and_verdict(tmp_path: Path) -> None:
    tiny = "--shape 32 --patch 16 --batch 2 --minutes 0.15 --train-volumes 2 --iterations-per-epoch 2"
    options = [
        *tiny.split(),
        "--val-patches",
        "1",
        "--test-repeats",
        "1",
        "--no-write",
        "--keep",
        str(tmp_path),
    ]
    command = [sys.executable, str(REPO / "benchmarks" / "bench_training.py"), *options]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    lines = out.splitlines()
    for label in [*ROWS, "**randomised, all**", "**original fragments**"]:
        row = [line for line in lines if line.startswith(f"| {label} |")]
        assert len(row) == 1, label
        cells = [c.strip() for c in row[0].strip("|").split("|")]
        assert len(cells) == 9 and cells[4] != "nan"  # the blur + Otsu score beside the network's
    assert sum(line.startswith("| randomised 10") for line in lines) == 8
    assert sum(line.startswith("| original 10") for line in lines) == 3
    assert "- Mean over the randomised test volumes ≥ 0.75:" in out
    assert "- Every sub-range ≥ blur + Otsu + 0.15:" in out
    assert "- Original fragments ≥ 0.769" in out
    assert "Training speed on this CPU" in out
