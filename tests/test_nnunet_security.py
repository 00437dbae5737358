"""Hostile nnU-Net plans: no class name in a model folder or a fine-tuned .pt may run code.

Each case names a real route to process creation, native-code loading or code evaluation (several of
them work with ``pydoc.locate``, the way nnU-Net itself resolves names). Loading must refuse every one
with an error naming the file, the field and the value, and nothing may have happened: no marker file,
no process started, no library loaded.
"""

from __future__ import annotations

import copy
import ctypes
import json
import os
import pydoc
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("dynamic_network_architectures")
torch = pytest.importorskip("torch")

from napari_vesuvius.cli.main import main  # noqa: E402
from napari_vesuvius.core.errors import CheckpointError  # noqa: E402
from napari_vesuvius.core.inference.checkpoint import load_checkpoint, save_nnunet_checkpoint  # noqa: E402
from napari_vesuvius.core.inference.nnunet import NnUNetPlansError, load_nnunet_model  # noqa: E402
from napari_vesuvius.core.inference.nnunet_classes import NETWORK_CLASSES, OP_CLASSES, op_class  # noqa: E402
from napari_vesuvius.core.volume.io import write_volume  # noqa: E402
from nnunet_fixtures import make_nnunet_model_folder  # noqa: E402

POPEN_ROUTE = "torch.nn.functional.np.f2py.subprocess.Popen"  # module globals lead to subprocess
CDLL_ROUTE = "torch.nn.modules.module.torch.ctypes.CDLL"  # ... and to loading a shared library


def _hostile_cases(marker: Path) -> dict[str, tuple[str, str, Any, dict[str, Any]]]:
    """name → (field, the key it goes in, hostile value, extra arch_kwargs)."""
    command = {"args": ["touch", str(marker)]}
    return {
        "nonlin Popen via torch.nn globals": ("nonlin", "nonlin", POPEN_ROUTE, {"nonlin_kwargs": command}),
        "dropout bare subprocess.Popen": (
            "dropout_op",
            "dropout_op",
            "subprocess.Popen",
            {"dropout_op_kwargs": command},
        ),
        "norm_op loads a shared library": (
            "norm_op",
            "norm_op",
            CDLL_ROUTE,
            {"norm_op_kwargs": {"name": "libc.so.6"}},
        ),
        "conv_op os.system": ("conv_op", "conv_op", "os.system", {}),
        "network class via the d-n-a prefix": (
            "network_class_name",
            "network_class_name",
            "dynamic_network_architectures.architectures.unet.torch.ctypes.CDLL",
            {},
        ),
        "network class attribute walk": (
            "network_class_name",
            "network_class_name",
            "dynamic_network_architectures.architectures.unet.PlainConvUNet.__init__.__globals__",
            {},
        ),
        "nonlin builtins.exec": ("nonlin", "nonlin", "builtins.exec", {"nonlin_kwargs": None}),
        "nonlin with trailing space": ("nonlin", "nonlin", "torch.nn.LeakyReLU ", {}),
        "extra class field via _kw_requires_import": ("_kw_requires_import", "block", "subprocess.Popen", {}),
    }


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("nnunet_results")
    return make_nnunet_model_folder(root, patch_size=(8, 8, 8), folds=(0,), base_features=4, n_stages=2)


@pytest.fixture
def no_side_effects(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record (and stop) any process start or library load that happens during a test."""
    calls: list[str] = []

    def refuse(what: str):
        def spy(*args: Any, **kwargs: Any) -> None:
            calls.append(what)
            raise AssertionError(f"{what} was called")

        return spy

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse("subprocess.Popen"))
    monkeypatch.setattr(ctypes.CDLL, "__init__", refuse("ctypes.CDLL"))
    monkeypatch.setattr(os, "system", refuse("os.system"))
    return calls


def _hostile_architecture(base: dict[str, Any], field: str, key: str, value: Any, extra: dict) -> dict:
    arch = copy.deepcopy(base)
    if field == "network_class_name":
        arch["network_class_name"] = value
    else:
        arch["arch_kwargs"][key] = value
        arch["arch_kwargs"].update(extra)
        requires = list(arch["_kw_requires_import"])
        arch["_kw_requires_import"] = [*requires, key] if key not in requires else requires
    return arch


def test_the_routes_are_real() -> None:
    """The dotted paths used below do reach the dangerous objects through module attributes."""
    assert pydoc.locate(POPEN_ROUTE) is subprocess.Popen
    assert pydoc.locate(CDLL_ROUTE) is ctypes.CDLL


@pytest.mark.parametrize("case", sorted(_hostile_cases(Path("x"))))
def test_hostile_plans_folder_is_refused(
    model_folder: Path, tmp_path: Path, case: str, no_side_effects: list[str]
) -> None:
    marker = tmp_path / "pwned"
    field, key, value, extra = _hostile_cases(marker)[case]
    folder = tmp_path / model_folder.parent.name / model_folder.name
    shutil.copytree(model_folder, folder)
    plans = json.loads((folder / "plans.json").read_text())
    config = plans["configurations"]["3d_fullres"]
    config["architecture"] = _hostile_architecture(config["architecture"], field, key, value, extra)
    (folder / "plans.json").write_text(json.dumps(plans))

    with pytest.raises(NnUNetPlansError) as info:
        load_nnunet_model(folder)
    message = str(info.value)
    assert message.startswith(str(folder / "plans.json"))
    assert field in message
    assert repr(value)[:60] in message or field == "_kw_requires_import"
    assert not marker.exists()
    assert no_side_effects == []


@pytest.mark.parametrize("case", sorted(_hostile_cases(Path("x"))))
def test_hostile_fine_tuned_checkpoint_is_refused(
    model_folder: Path, tmp_path: Path, case: str, no_side_effects: list[str]
) -> None:
    """The same plans entry inside a weights-only ``nnunet-dynamic`` .pt is refused the same way."""
    marker = tmp_path / "pwned"
    field, key, value, extra = _hostile_cases(marker)[case]
    model = load_nnunet_model(model_folder)
    plans = json.loads((model_folder / "plans.json").read_text())
    base = plans["configurations"]["3d_fullres"]["architecture"]
    good = tmp_path / "good.pt"
    save_nnunet_checkpoint(
        good, model.networks[0], {"architecture": base, "num_classes": 2}, model.normalization, (8, 8, 8)
    )
    payload = torch.load(good, weights_only=True)
    payload["nnunet"]["architecture"] = _hostile_architecture(base, field, key, value, extra)
    hostile = tmp_path / "hostile.pt"
    torch.save(payload, hostile)

    assert load_checkpoint(good).networks  # the untouched one loads
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(hostile)
    assert str(info.value).startswith(str(hostile))
    assert field in str(info.value)
    assert not marker.exists()
    assert no_side_effects == []


def test_predict_cli_refuses_hostile_folder_without_running_it(
    model_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """End to end with the real subprocess module: the command never runs, the CLI says why."""
    marker = tmp_path / "pwned"
    folder = tmp_path / model_folder.parent.name / model_folder.name
    shutil.copytree(model_folder, folder)
    plans = json.loads((folder / "plans.json").read_text())
    arch = plans["configurations"]["3d_fullres"]["architecture"]
    arch["arch_kwargs"].update(nonlin=POPEN_ROUTE, nonlin_kwargs={"args": ["touch", str(marker)]})
    (folder / "plans.json").write_text(json.dumps(plans))
    volume = tmp_path / "ct.tif"
    write_volume(volume, np.zeros((8, 8, 8), np.uint8))

    code = main(
        ["predict", "--model", str(folder), "--input", str(volume), "--output", str(tmp_path / "p.tif")]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert err[-1].startswith(f"error: {folder / 'plans.json'}: arch_kwargs['nonlin']: refusing class name")
    assert "Traceback" not in "\n".join(err)
    assert not marker.exists()
    assert not (tmp_path / "p.tif").exists()


def test_every_allowed_name_is_a_module_class_nnunet_writes() -> None:
    """Each table entry resolves to a torch module class, and the spelling nnU-Net's planner writes
    (``cls.__module__ + '.' + cls.__name__``) is in the table for each of them."""
    plans = Path("plans.json")
    for field, table in OP_CLASSES.items():
        for name in table:
            cls = op_class(field, name, plans)
            assert isinstance(cls, type) and issubclass(cls, torch.nn.Module), name
            assert f"{cls.__module__}.{cls.__name__}" in table
    from napari_vesuvius.core.inference.nnunet_classes import network_class

    for name in NETWORK_CLASSES:
        cls = network_class(name, plans)
        assert issubclass(cls, torch.nn.Module)
        assert f"{cls.__module__}.{cls.__name__}" in NETWORK_CLASSES
    assert op_class("nonlin", None, plans) is None
    with pytest.raises(NnUNetPlansError, match="conv_op"):
        op_class("conv_op", None, plans)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda a: a["arch_kwargs"].update(nonlin_kwargs={"inplace": {"nested": 1}}), "nonlin_kwargs"),
        (lambda a: a["arch_kwargs"].update(n_stages="2"), r"arch_kwargs\['n_stages'\]"),
        (lambda a: a["arch_kwargs"].update(unknown_argument=3), "takes no argument"),
        (lambda a: a.update(_kw_requires_import="conv_op"), "_kw_requires_import"),
    ],
)
def test_malformed_architecture_values_are_refused(
    model_folder: Path, tmp_path: Path, edit: Any, message: str
) -> None:
    folder = tmp_path / model_folder.parent.name / model_folder.name
    shutil.copytree(model_folder, folder)
    plans = json.loads((folder / "plans.json").read_text())
    edit(plans["configurations"]["3d_fullres"]["architecture"])
    (folder / "plans.json").write_text(json.dumps(plans))
    with pytest.raises(NnUNetPlansError, match=message):
        load_nnunet_model(folder)
