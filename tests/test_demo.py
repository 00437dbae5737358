"""The main job (``napari-vesuvius demo``) end to end, at the smallest size its settings allow."""

from __future__ import annotations

import json
import zipfile

import pytest

pytest.importorskip("torch")


@pytest.mark.slow
def test_demo_runs_the_whole_loop_with_the_models_own_clean_up(tmp_path, capsys) -> None:
    from napari_vesuvius.cli.main import main
    from napari_vesuvius.core.postprocess import PostprocessConfig
    from napari_vesuvius.core.training.postprocess_step import POSTPROCESS_JSON

    code = main([
        "demo", "--workdir", str(tmp_path), "--size", "48", "--epochs", "1",
        "--iterations-per-epoch", "2", "--device", "cpu", "--json",
    ])  # fmt: skip
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert set(summary["timings"]) >= {"synthesize", "train", "predict_cleanup_export", "score"}
    with zipfile.ZipFile(summary["submission"]) as archive:
        assert sorted(archive.namelist()) == sorted(f"{vid}.tif" for vid in summary["scores"])
    assert all(0.0 <= entry["score"] <= 1.0 for entry in summary["scores"].values())
    # the training run held out a volume, chose its clean-up there, and the export used it
    chosen = PostprocessConfig.load(tmp_path / "run" / POSTPROCESS_JSON)
    assert summary["settings"]["postprocess"] == chosen.to_dict()
    assert summary["settings"]["postprocess_source"].startswith("the model's own clean-up")
