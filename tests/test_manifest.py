"""The napari manifest: valid, the workbench first, the single steps kept, menus where they fit, and the
preferences declared in ``configurations`` (read back by ``_preferences.preference``)."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

import napari_vesuvius
from napari_vesuvius.widgets import _preferences

MANIFEST = Path(napari_vesuvius.__file__).parent / "napari.yaml"


@pytest.fixture(scope="module")
def manifest():
    from npe2 import PluginManifest

    return PluginManifest.from_file(MANIFEST)  # validates the schema


def _resolve(python_name: str):
    module, _, attribute = python_name.partition(":")
    return getattr(importlib.import_module(module), attribute)


def test_every_command_resolves(manifest):
    for command in manifest.contributions.commands:
        assert callable(_resolve(command.python_name)), command.id


def test_workbench_first_then_the_single_steps(manifest):
    from napari_vesuvius.widgets.workbench import STEPS, StepDock, Workbench

    commands = {command.id: command for command in manifest.contributions.commands}
    widgets = manifest.contributions.widgets
    assert widgets[0].display_name == "Vesuvius workbench"
    assert _resolve(commands[widgets[0].command].python_name) is Workbench
    singles = [_resolve(commands[widget.command].python_name) for widget in widgets[1:]]
    assert all(issubclass(single, StepDock) for single in singles)
    assert sorted(single.index for single in singles) == list(range(len(STEPS)))
    names = [widget.display_name for widget in widgets[1:]]
    assert names == ["Data", "Inference", "Tune", "Score", "Proofread", "Train", "Export submission"]


def test_menus_are_napari_contributable(manifest):
    from napari._app_model.constants._menus import is_menu_contributable

    menus = manifest.contributions.menus
    submenus = {submenu.id for submenu in manifest.contributions.submenus}
    assert submenus == {"napari-vesuvius.surfaces"}
    assert [item.submenu for item in menus["napari/layers/segment"]] == ["napari-vesuvius.surfaces"]
    inside = [item.command for item in menus["napari-vesuvius.surfaces"]]
    assert inside[0] == "napari-vesuvius.workbench" and "napari-vesuvius.inference_widget" in inside
    widget_commands = {widget.command for widget in manifest.contributions.widgets}
    for menu_id, items in menus.items():
        assert is_menu_contributable(menu_id), menu_id
        for item in items:
            assert getattr(item, "command", None) in widget_commands | {None}, (menu_id, item)


def test_menus_reach_napari(make_napari_viewer):
    """The workbench is reachable from Layers › Segment › Vesuvius surface detection."""
    from napari._app_model import get_app_model

    make_napari_viewer()
    app = get_app_model()
    segment = [item for item in app.menus.get_menu("napari/layers/segment") if hasattr(item, "submenu")]
    assert any(item.submenu == "napari-vesuvius.surfaces" for item in segment)
    inside = [item.command.id for item in app.menus.get_menu("napari-vesuvius.surfaces")]
    assert "napari-vesuvius.workbench" in inside


def test_configurations_declare_the_preferences(manifest):
    declared = {
        (section, key): prop
        for section, contribution in manifest.contributions.configurations.items()
        for key, prop in contribution.properties.items()
    }
    assert set(declared) == {(section, key) for key, (section, _) in _preferences.PREFERENCES.items()}
    for key, (section, default) in _preferences.PREFERENCES.items():
        prop = declared[(section, key)]
        assert prop.default == default and prop.title and prop.description, key
    from napari_vesuvius.core.inference.settings import DEVICES, PRECISIONS

    assert set(declared[("inference", "device")].enum) == set(DEVICES)
    assert set(declared[("inference", "precision")].enum) == set(PRECISIONS)


def test_preferences_default_without_persistence():
    # the test suite runs with NAPARI_VESUVIUS_NO_SETTINGS: built-in defaults, nothing read or written
    assert _preferences.preference("autosave_minutes") == _preferences.default("autosave_minutes") == 3.0


def test_a_changed_napari_setting_becomes_a_widget_default(make_napari_viewer, monkeypatch, tmp_path):
    import napari.settings

    from napari_vesuvius.widgets import _settings
    from napari_vesuvius.widgets.proofread_widget import ProofreadWidget

    # plugin settings in a temporary folder, persistence on for this test only
    monkeypatch.setattr(napari.settings, "_PLUGIN_SETTINGS", {})
    monkeypatch.delenv(_settings.DISABLE_ENV, raising=False)
    settings = napari.settings.get_plugin_settings(_preferences.PLUGIN, path_dir=tmp_path)
    settings.proofreading.autosave_minutes = 7.5
    settings.inference.device = "cpu"
    assert (tmp_path / "napari-vesuvius.yaml").is_file()  # napari saved it
    assert _preferences.preference("autosave_minutes") == 7.5
    assert _preferences.preference("device") == "cpu"
    viewer = make_napari_viewer()
    widget = ProofreadWidget(viewer, persist=False)
    assert widget.autosave_minutes.value == 7.5
    from napari_vesuvius.widgets._sliding_window_section import SlidingWindowSection

    assert SlidingWindowSection().device.value == "cpu"  # Inference's and Export's device default
