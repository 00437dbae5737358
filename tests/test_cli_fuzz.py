"""Every CLI command against a table of bad inputs: exit 1 (2 for usage mistakes) and one ``error:`` line
naming the offending file, never a traceback, no pre-existing file changed and nothing left behind.

The commands run in-process through ``napari_vesuvius.cli.main.main`` (fast); a few rows also run as a
real subprocess to prove that no traceback reaches the terminal. Inputs are tiny (16³) and built once per
module in ``world``; each row writes only into its own ``out`` folder. A row is
a :class:`Row`: a command-line template, the text (usually a file name) the error line must name, the
expected exit code, and optionally an output that exists before the run.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import tifffile

from napari_vesuvius.cli.main import main

MARKER = "pwned.marker"


# ------------------------------------------------------------------------------------------ the world
class _Evil:
    """Unpickling this runs ``open(marker, 'w')``: any code execution leaves the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.marker, "w"))


def _tif(path: Path, array: np.ndarray) -> Path:
    tifffile.imwrite(path, array, photometric="minisblack")
    return path


def _crafted(source: Path, target: Path, change: Callable[[dict], None]) -> Path:
    import torch

    payload = torch.load(source, map_location="cpu", weights_only=True)
    change(payload)
    torch.save(payload, target)
    return target


def _nan_weights(payload: dict) -> None:
    first = next(iter(payload["state_dict"]))
    payload["state_dict"][first] = payload["state_dict"][first].clone().fill_(float("nan"))


def _std_zero(payload: dict) -> None:
    payload["normalization"]["std"] = 0.0


def _surface_99(payload: dict) -> None:
    payload["surface_class"] = 99


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> SimpleNamespace:
    import torch

    from napari_vesuvius.core.synthetic import write_challenge_dataset
    from napari_vesuvius.core.synthetic.dataset import write_volume_tif

    root = tmp_path_factory.mktemp("world")
    w = SimpleNamespace(root=root)
    rng = np.random.default_rng(0)
    shape = (16, 16, 16)
    w.ct = _tif(root / "ct.tif", rng.integers(1, 256, shape, dtype=np.uint8))
    label = np.zeros(shape, np.uint8)
    label[6:9] = 1
    label[:, :2] = 2
    w.label = _tif(root / "label.tif", label)
    w.label_small = _tif(root / "label_small.tif", label[:8])
    w.label3 = _tif(root / "label3.tif", np.where(label == 1, 3, 0).astype(np.uint8))
    w.label255 = _tif(root / "label255.tif", (label == 1).astype(np.uint8) * 255)
    w.prob = _tif(root / "prob.tif", rng.integers(0, 256, shape, dtype=np.uint8))
    w.prob_float = _tif(root / "prob_float.tif", rng.random(shape, dtype=np.float32))
    w.mask = _tif(root / "mask.tif", (label == 1).astype(np.uint8))
    w.four_d = _tif(root / "four_d.tif", rng.integers(0, 256, (2, *shape), dtype=np.uint8))
    nan_ct = rng.random(shape, dtype=np.float32)
    nan_ct[3, 3, 3] = np.nan
    w.nan_ct = _tif(root / "nan_ct.tif", nan_ct)
    w.missing = root / "missing.tif"
    w.empty = root / "empty.tif"
    w.empty.write_bytes(b"")
    w.garbage = root / "garbage.tif"
    w.garbage.write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    whole = w.ct.read_bytes()
    w.truncated = root / "truncated.tif"
    w.truncated.write_bytes(whole[: len(whole) // 2])
    w.text = root / "notes.tif"
    w.text.write_text("this is a text file renamed .tif\n")
    w.dir_tif = root / "folder.tif"
    w.dir_tif.mkdir()
    w.garbage_zarr = root / "garbage.zarr"
    w.garbage_zarr.mkdir()
    (w.garbage_zarr / "zarr.json").write_text("{ not json")
    w.somefile = root / "somefile"
    w.somefile.write_text("a file, not a folder")
    w.garbage_json = root / "garbage.json"
    w.garbage_json.write_text("{ this is not json")
    w.bad_config = root / "bad_config.json"
    w.bad_config.write_text(json.dumps({"t_low": "high", "no_such_setting": 1}))
    w.list_json = root / "list.json"
    w.list_json.write_text("[1, 2, 3]")
    # models: a tiny real one, then broken and hostile ones
    w.model = root / "model.pt"
    assert main(["init-model", "--output", str(w.model), "--patch-size", "16", "16", "16"]) == 0
    w.random_pt = root / "random.pt"
    w.random_pt.write_bytes(rng.integers(0, 256, 2048, dtype=np.uint8).tobytes())
    w.zip_pt = root / "notorch.pt"
    with zipfile.ZipFile(w.zip_pt, "w") as archive:
        archive.writestr("hello.txt", "a zip, but not a torch file")
    w.marker = root / MARKER
    w.evil_pt = root / "evil.pt"
    torch.save({"format": "napari-vesuvius-checkpoint", "payload": _Evil(w.marker)}, w.evil_pt)
    w.evil_pickle = root / "evil_pickle.pt"
    w.evil_pickle.write_bytes(pickle.dumps(_Evil(w.marker)))
    w.empty_model_dir = root / "empty_model"
    w.empty_model_dir.mkdir()
    w.nan_model = _crafted(w.model, root / "nan_weights.pt", _nan_weights)
    w.std0_model = _crafted(w.model, root / "std0.pt", _std_zero)
    w.sc99_model = _crafted(w.model, root / "surface99.pt", _surface_99)
    # a challenge dataset (1 train + 1 test volume) and one with a bad label
    w.dataset = root / "dataset"
    write_challenge_dataset(w.dataset, n_train=2, n_test=1, shape=shape, seed=1)
    w.train_id = sorted(p.stem for p in (w.dataset / "train_images").iterdir())[0]
    w.test_id = next((w.dataset / "test_images").iterdir()).stem
    w.bad_dataset = root / "bad_dataset"
    write_challenge_dataset(w.bad_dataset, n_train=3, n_test=1, shape=shape, seed=2)
    bad_label = sorted((w.bad_dataset / "train_labels").iterdir())[-1]
    write_volume_tif(bad_label, np.full(shape, 7, np.uint8))
    w.bad_label = bad_label
    # mask folders for export
    w.masks = root / "masks"
    w.masks.mkdir()
    _tif(w.masks / f"{w.test_id}.tif", np.zeros(shape, np.uint8))
    w.masks_float = root / "masks_float"
    w.masks_float.mkdir()
    _tif(w.masks_float / f"{w.test_id}.tif", np.full(shape, 0.5, np.float32))
    w.masks_shape = root / "masks_shape"
    w.masks_shape.mkdir()
    _tif(w.masks_shape / f"{w.test_id}.tif", np.zeros((8, 16, 16), np.uint8))
    w.masks_garbage = root / "masks_garbage"
    w.masks_garbage.mkdir()
    (w.masks_garbage / f"{w.test_id}.tif").write_bytes(b"II*\x00garbage")
    w.empty_dir = root / "empty_dir"
    w.empty_dir.mkdir()
    w.nnunet_evil = _hostile_nnunet(root / "nnunet", w.marker)
    return w


def _hostile_nnunet(root: Path, marker: Path) -> Path | None:
    """An nnU-Net model folder whose plans name ``os.system`` through torch.nn's module globals (None
    without dynamic-network-architectures, which building its weights needs)."""
    import importlib.util

    if importlib.util.find_spec("dynamic_network_architectures") is None:
        return None
    from nnunet_fixtures import make_nnunet_model_folder

    folder = make_nnunet_model_folder(root, patch_size=(16, 16, 16), folds=(0,), n_stages=3, base_features=4)
    plans_path = folder / "plans.json"
    plans = json.loads(plans_path.read_text())
    for configuration in plans["configurations"].values():
        kwargs = configuration["architecture"]["arch_kwargs"]
        kwargs["nonlin"] = "torch.nn.modules.conv.torch.os.system"
        kwargs["nonlin_kwargs"] = {"command": f"touch {marker}"}
    plans_path.write_text(json.dumps(plans))
    return folder


def _files(*roots: Path) -> dict[str, str]:
    """sha256 of every file under ``roots`` (a folder's entry maps to 'dir')."""
    found: dict[str, str] = {}
    for root in roots:
        for path in sorted(root.rglob("*")):
            if path.is_file():
                found[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
            elif path.is_dir():
                found[str(path)] = "dir"
    return found


# ------------------------------------------------------------------------------------------ the table
@dataclass(frozen=True)
class Row:
    """``argv``: a command line whose ``{name}`` fields are ``world`` attributes or ``out`` (the row's
    own output folder); ``names``: text the error line must contain (same fields, e.g. ``{ct.name}``)."""

    id: str
    argv: str
    names: str
    code: int = 1
    existing: str | None = None  # a file under ``out`` that exists before the run (must stay intact)
    #: new paths under ``out`` a failed run may leave (default for train/finetune: its run folder, whose
    #: config.json and metrics.jsonl record the failure)
    creates: tuple[str, ...] = ()

    def command(self, w: SimpleNamespace, out: Path) -> list[str]:
        return [token.format(**vars(w), out=out) for token in self.argv.split()]

    def named(self, w: SimpleNamespace, out: Path) -> str:
        return self.names.format(**vars(w), out=out)


PREDICT = "predict --model {model} --input {ct} --quiet --device cpu --output"
MODEL = "predict --input {ct} --output {out}/p.tif --device cpu --quiet --model"
INPUT = "predict --model {model} --output {out}/p.tif --device cpu --quiet --input"
TRAIN = "--epochs 1 --iterations-per-epoch 1 --patch-size 16 16 16 --device cpu --no-choose-postprocess"
FINETUNE = "--epochs 1 --iterations-per-epoch 1 --device cpu --run-dir {out}/run"
SWEEP = "--param t_low --values 0.3"
CHOOSE = "choose-postprocess --data {dataset} --quiet --model"
SUBMIT = "submit --data {dataset} --quiet --model"
EXPORT = "export --data {dataset} --quiet --masks"

ROWS = [
    # info: unreadable volumes
    Row("info-missing", "info {missing}", "{missing.name}"),
    Row("info-empty", "info {empty}", "{empty.name}"),
    Row("info-garbage", "info {garbage}", "{garbage.name}"),
    Row("info-truncated", "info --counts {truncated}", "{truncated.name}"),
    Row("info-text-as-tif", "info {text}", "{text.name}"),
    Row("info-folder-as-tif", "info {dir_tif}", "{dir_tif.name}"),
    Row("info-garbage-zarr", "info {garbage_zarr}", "{garbage_zarr.name}"),
    Row("info-4d-tif", "info {four_d}", "{four_d.name}"),
    Row("info-bad-dataset", "info {bad_dataset}", "{bad_label.name}"),
    Row(
        "info-unreachable-url",
        "info http://127.0.0.1:9/scan.zarr --retries 1",
        "http://127.0.0.1:9/scan.zarr",
    ),
    # score: bad predictions and labels
    Row("score-missing", "score {missing} {label}", "{missing.name}"),
    Row("score-garbage", "score {garbage} {label}", "{garbage.name}"),
    Row("score-shape", "score {mask} {label_small}", "{label_small.name}"),
    Row("score-label-3", "score {mask} {label3}", "{label3.name}"),
    Row("score-label-255", "score {mask} {label255}", "{label255.name}"),
    Row("score-float-pred", "score {prob_float} {label}", "{prob_float.name}"),
    Row("score-ct-as-pred", "score {ct} {label}", "{ct.name}"),
    # predict: models
    Row("predict-random-bytes-model", f"{MODEL} {{random_pt}}", "{random_pt.name}"),
    Row("predict-zip-not-torch", f"{MODEL} {{zip_pt}}", "{zip_pt.name}"),
    Row("predict-malicious-pickle-pt", f"{MODEL} {{evil_pt}}", "{evil_pt.name}"),
    Row("predict-malicious-raw-pickle", f"{MODEL} {{evil_pickle}}", "{evil_pickle.name}"),
    Row("predict-empty-model-folder", f"{MODEL} {{empty_dir}}", "{empty_dir.name}"),
    Row("predict-surface-class-99", f"{MODEL} {{sc99_model}}", "{sc99_model.name}"),
    Row("predict-std-0", f"{MODEL} {{std0_model}}", "{std0_model.name}"),
    Row("predict-nan-weights", f"{MODEL} {{nan_model}}", "{nan_model.name}"),
    Row("predict-hostile-nnunet-plans", f"{MODEL} {{nnunet_evil}}", "plans.json"),
    Row("submit-hostile-nnunet-plans", f"{SUBMIT} {{nnunet_evil}} --out {{out}}/s.zip", "plans.json"),
    # predict: inputs
    Row("predict-missing-input", f"{INPUT} {{missing}}", "{missing.name}"),
    Row(
        "predict-empty-folder-input",
        "predict --model {model} --input {empty_dir} --output {out}/p",
        "{empty_dir.name}",
    ),
    Row("predict-garbage-input", f"{INPUT} {{garbage}}", "{garbage.name}"),
    Row("predict-truncated-input", f"{INPUT} {{truncated}}", "{truncated.name}"),
    Row("predict-4d-input", f"{INPUT} {{four_d}}", "{four_d.name}"),
    Row("predict-nan-input", f"{INPUT} {{nan_ct}}", "{nan_ct.name}"),
    # predict: outputs
    Row("predict-existing-output", f"{PREDICT} {{out}}/p.tif", "p.tif", existing="p.tif"),
    Row("predict-output-is-input", f"{PREDICT} {{ct}} --overwrite", "{ct.name}"),
    Row("predict-output-under-a-file", f"{PREDICT} {{somefile}}/x.zarr", "{somefile.name}"),
    Row("predict-output-type", f"{PREDICT} {{out}}/p.png", "p.png"),
    # init-model
    Row("init-model-existing", "init-model --output {out}/m.pt", "m.pt", existing="m.pt"),
    Row("init-model-under-a-file", "init-model --output {somefile}/m.pt", "{somefile.name}"),
    Row("init-model-std-0", "init-model --output {out}/m.pt --std 0", "m.pt"),
    Row("init-model-std-nan", "init-model --output {out}/m.pt --std nan", "m.pt"),
    # postprocess
    Row("postprocess-missing", "postprocess {missing} -o {out}/m.tif -q", "{missing.name}"),
    Row("postprocess-garbage", "postprocess {garbage} -o {out}/m.tif -q", "{garbage.name}"),
    Row("postprocess-output-is-input", "postprocess {prob} -o {prob} -q --overwrite", "{prob.name}"),
    Row("postprocess-existing-output", "postprocess {prob} -o {out}/m.tif -q", "m.tif", existing="m.tif"),
    Row(
        "postprocess-garbage-config",
        "postprocess {prob} -c {garbage_json} -o {out}/m.tif -q",
        "{garbage_json.name}",
    ),
    Row(
        "postprocess-bad-config-values",
        "postprocess {prob} -c {bad_config} -o {out}/m.tif -q",
        "{bad_config.name}",
    ),
    Row(
        "postprocess-config-not-a-dict",
        "postprocess {prob} -c {list_json} -o {out}/m.tif -q",
        "{list_json.name}",
    ),
    Row(
        "postprocess-scan-mask-shape",
        "postprocess {prob} --scan-mask-from {label_small} -o {out}/m.tif -q",
        "{label_small.name}",
    ),
    Row("postprocess-output-under-a-file", "postprocess {prob} -o {somefile}/m.tif -q", "{somefile.name}"),
    Row(
        "postprocess-config-onto-input",
        "postprocess {prob} --write-default-config {prob} -o {out}/m.tif --overwrite",
        "{prob.name}",
    ),
    # train and finetune
    Row("train-missing-data", f"train --run-dir {{out}}/run --data {{missing}} {TRAIN}", "{missing.name}"),
    Row(
        "train-garbage-config",
        f"train --run-dir {{out}}/run --config {{garbage_json}} {TRAIN}",
        "{garbage_json.name}",
    ),
    Row(
        "train-pair-shape",
        f"train --run-dir {{out}}/run --pair {{ct}} {{label_small}} {TRAIN}",
        "{label_small.name}",
    ),
    Row(
        "train-pair-garbage",
        f"train --run-dir {{out}}/run --pair {{garbage}} {{label}} {TRAIN}",
        "{garbage.name}",
    ),
    Row(
        "train-run-dir-is-a-file",
        f"train --run-dir {{somefile}} --data {{dataset}} {TRAIN}",
        "{somefile.name}",
    ),
    Row(
        "train-init-random-bytes",
        f"train --run-dir {{out}}/run --data {{dataset}} --init {{random_pt}} {TRAIN}",
        "{random_pt.name}",
    ),
    Row(
        "train-init-malicious",
        f"train --run-dir {{out}}/run --data {{dataset}} --init {{evil_pt}} {TRAIN}",
        "{evil_pt.name}",
    ),
    Row(
        "train-bad-label-in-dataset",
        f"train --run-dir {{out}}/run --data {{bad_dataset}} {TRAIN}",
        "{bad_label.name}",
    ),
    Row(
        "finetune-random-model",
        f"finetune --model {{random_pt}} --pair {{ct}} {{label}} {FINETUNE}",
        "{random_pt.name}",
    ),
    Row(
        "finetune-missing-image",
        f"finetune --model {{model}} --pair {{missing}} {{label}} {FINETUNE}",
        "{missing.name}",
    ),
    Row(
        "finetune-label-shape",
        f"finetune --model {{model}} --pair {{ct}} {{label_small}} {FINETUNE}",
        "{label_small.name}",
    ),
    # sweep
    Row("sweep-missing-label", f"sweep {{prob}} {{missing}} {SWEEP}", "{missing.name}"),
    Row("sweep-bad-values", "sweep {prob} {label} --param t_low --values abc", "--values"),
    Row(
        "sweep-garbage-config",
        f"sweep {{prob}} {{label}} {SWEEP} --config {{garbage_json}}",
        "{garbage_json.name}",
    ),
    Row(
        "sweep-write-best-is-input",
        f"sweep {{prob}} {{label}} {SWEEP} --write-best {{label}} --overwrite",
        "{label.name}",
    ),
    Row(
        "sweep-write-best-exists",
        f"sweep {{prob}} {{label}} {SWEEP} --write-best {{out}}/best.json",
        "best.json",
        existing="best.json",
    ),
    Row("sweep-shape", f"sweep {{prob}} {{label_small}} {SWEEP}", "{label_small.name}"),
    # choose-postprocess
    Row("choose-random-model", f"{CHOOSE} {{random_pt}} --ids {{train_id}}", "{random_pt.name}"),
    Row("choose-unknown-id", f"{CHOOSE} {{model}} --ids 123", "123"),
    Row(
        "choose-out-is-model",
        f"{CHOOSE} {{model}} --ids {{train_id}} --out {{model}} --overwrite",
        "{model.name}",
    ),
    Row("choose-empty-run-dir", "choose-postprocess --run-dir {empty_dir} --quiet", "{empty_dir.name}"),
    # submit and export
    Row("submit-random-model", f"{SUBMIT} {{random_pt}} --out {{out}}/s.zip", "{random_pt.name}"),
    Row("submit-malicious-model", f"{SUBMIT} {{evil_pt}} --out {{out}}/s.zip", "{evil_pt.name}"),
    Row("submit-missing-data", "submit --model {model} --data {missing} --out {out}/s.zip", "{missing.name}"),
    Row("submit-existing-out", f"{SUBMIT} {{model}} --out {{out}}/s.zip", "s.zip", existing="s.zip"),
    Row(
        "submit-garbage-postprocess",
        f"{SUBMIT} {{model}} --postprocess {{garbage_json}} --out {{out}}/s.zip",
        "{garbage_json.name}",
    ),
    Row("submit-out-under-a-file", f"{SUBMIT} {{model}} --out {{somefile}}/s.zip", "{somefile.name}"),
    Row("submit-out-is-model", f"{SUBMIT} {{model}} --out {{model}} --overwrite", "{model.name}"),
    Row("export-garbage-mask", f"{EXPORT} {{masks_garbage}} --out {{out}}/s.zip", "{masks_garbage.name}"),
    Row("export-float-mask", f"{EXPORT} {{masks_float}} --out {{out}}/s.zip", "{test_id}"),
    Row("export-mask-shape", f"{EXPORT} {{masks_shape}} --out {{out}}/s.zip", "{test_id}"),
    Row("export-existing-out", f"{EXPORT} {{masks}} --out {{out}}/s.zip", "s.zip", existing="s.zip"),
    Row("export-out-is-a-folder", f"{EXPORT} {{masks}} --out {{empty_dir}} --overwrite", "{empty_dir.name}"),
    Row("export-no-masks", f"{EXPORT} {{empty_dir}} --out {{out}}/s.zip", "{empty_dir.name}"),
    # demo
    Row("demo-workdir-is-a-file", "demo --workdir {somefile}", "{somefile.name}"),
    # usage mistakes: argparse (exit 2)
    Row("usage-predict-without-model", "predict --input {ct} --output {out}/p.tif", "--model", code=2),
    Row("usage-unknown-option", "score {mask} {label} --no-such-option", "--no-such-option", code=2),
    Row("usage-bad-tta", f"{PREDICT} {{out}}/p.tif --tta 7", "--tta", code=2),
]


def _params() -> list[Any]:
    return [pytest.param(row, id=row.id) for row in ROWS]


def _check_stderr(err: str, row: Row, named: str) -> None:
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:") or ": error:" in line]
    assert len(errors) == 1, err
    assert named in errors[0], f"{named!r} not named in {errors[0]!r}"
    if row.code == 2:
        assert any(line.startswith("usage:") for line in lines), err


@pytest.mark.parametrize("row", _params())
def test_bad_input_is_one_clear_error_and_changes_nothing(row: Row, world, tmp_path, capsys) -> None:
    if "{nnunet_evil}" in row.argv and world.nnunet_evil is None:
        pytest.skip("needs dynamic-network-architectures")
    out = tmp_path / "out"
    out.mkdir()
    if row.existing is not None:
        (out / row.existing).write_bytes(b"precious earlier output")
    before = _files(world.root, out)
    argv = row.command(world, out)
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse
        code = exit_.code
    err = capsys.readouterr().err
    assert code == row.code, f"exit {code}, stderr:\n{err}"
    _check_stderr(err, row, row.named(world, out))
    after = _files(world.root, out)
    creates = row.creates or (("run",) if argv[0] in ("train", "finetune") else ())
    allowed = tuple(str(out / name) for name in creates)
    after = {k: v for k, v in after.items() if k in before or not k.startswith(allowed or ("\0",))}
    assert after == before, "a file changed or was left behind"
    assert not world.marker.exists(), "a hostile pickle ran code"


SUBPROCESS_ROWS = ("info-garbage", "predict-malicious-pickle-pt", "postprocess-output-is-input")


@pytest.mark.slow
@pytest.mark.parametrize("row_id", SUBPROCESS_ROWS)
def test_bad_input_in_a_real_process_prints_no_traceback(row_id: str, world, tmp_path) -> None:
    row = next(r for r in ROWS if r.id == row_id)
    out = tmp_path / "out"
    out.mkdir()
    before = _files(world.root, out)
    command = [sys.executable, "-m", "napari_vesuvius.cli.main", *row.command(world, out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr
    _check_stderr(done.stderr, row, row.named(world, out))
    assert _files(world.root, out) == before
    assert not world.marker.exists()
