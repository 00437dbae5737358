"""Built-in U-Net, self-describing checkpoints and model loading."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from inference_helpers import TEST_CONFIG, tiny_network
from napari_vesuvius.core.errors import CheckpointError
from napari_vesuvius.core.inference.checkpoint import (
    load_checkpoint,
    read_checkpoint_info,
    save_checkpoint,
)
from napari_vesuvius.core.inference.loading import load_model
from napari_vesuvius.core.inference.model_api import Normalization
from napari_vesuvius.core.inference.unet import PRESETS, UNetConfig, build_unet, preset


@dataclasses.dataclass
class NotAllowListed:
    """A plain Python class: weights-only unpickling must refuse it."""

    payload: str = "anything"


def test_unet_shapes_features_and_deep_supervision() -> None:
    config = preset("tiny", deep_supervision=True)
    assert config.features == (8, 16, 32, 64) and config.divisor == (8, 8, 8)
    assert PRESETS["medium"].features == (32, 64, 128, 256, 320, 320)
    outputs = build_unet(config)(torch.zeros(1, 1, 16, 24, 16))
    assert [tuple(o.shape) for o in outputs] == [(1, 2, 16, 24, 16), (1, 2, 8, 12, 8), (1, 2, 4, 6, 4)]
    plain = build_unet(dataclasses.replace(config, deep_supervision=False))
    assert tuple(plain(torch.zeros(2, 1, 16, 16, 16)).shape) == (2, 2, 16, 16, 16)
    with pytest.raises(ValueError, match="multiples"):
        config.check_patch_size((16, 16, 12))
    with pytest.raises(ValueError, match="blocks_per_stage"):
        UNetConfig(n_stages=3, blocks_per_stage=(1, 1))
    assert UNetConfig.from_dict(config.to_dict()) == config


def test_checkpoint_round_trip(tmp_path) -> None:
    network = tiny_network(seed=3)
    norm = Normalization(mean=100.0, std=50.0)
    meta = {"epochs": 12, "data": ["a", "b"], "score": 0.51, "trainer": {"lr": 0.01}}
    path = save_checkpoint(tmp_path / "m.pt", network, TEST_CONFIG, norm, (16, 24, 16), meta)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]  # no temporary file left

    info = read_checkpoint_info(path)
    assert info.config == TEST_CONFIG and info.patch_size == (16, 24, 16) and info.normalization == norm
    assert info.metadata["epochs"] == 12 and info.metadata["trainer"] == {"lr": 0.01}
    assert "saved_at" in info.metadata

    for model in (load_checkpoint(path), load_model(path)):
        assert model.patch_size == (16, 24, 16) and model.normalization == norm and model.num_classes == 2
        x = torch.randn(1, 1, 16, 16, 16)
        with torch.no_grad():
            assert torch.equal(model.networks[0](x), network(x))


def test_checkpoint_metadata_must_be_plain(tmp_path) -> None:
    with pytest.raises(ValueError, match="not plain data"):
        save_checkpoint(tmp_path / "m.pt", tiny_network(), TEST_CONFIG, Normalization(), (16, 16, 16),
                        {"when": NotAllowListed()})  # fmt: skip
    assert not list(tmp_path.iterdir())


def test_pickled_objects_are_refused(tmp_path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"format": "napari-vesuvius-checkpoint", "config": NotAllowListed()}, path)
    with pytest.raises(CheckpointError, match="refused to load") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


def test_corrupt_truncated_and_foreign_files_are_reported(tmp_path) -> None:
    good = save_checkpoint(tmp_path / "good.pt", tiny_network(), TEST_CONFIG, Normalization(), (16, 16, 16))
    data = good.read_bytes()
    cases = {
        "truncated.pt": (data[: len(data) // 2], "corrupt, truncated"),
        "garbage.pt": (b"\x00not a checkpoint" * 100, "corrupt, truncated"),
        "empty.pt": (b"", "empty"),
    }
    for name, (content, message) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(CheckpointError, match=message) as info:
            load_checkpoint(tmp_path / name)
        assert name in str(info.value)

    torch.save({"network_weights": {}, "init_args": {}}, tmp_path / "nnunet.pth")
    with pytest.raises(CheckpointError, match="nnU-Net checkpoint"):
        load_checkpoint(tmp_path / "nnunet.pth")

    payload = torch.load(good, weights_only=True)
    payload["state_dict"].pop(next(iter(payload["state_dict"])))
    torch.save(payload, tmp_path / "mismatch.pt")
    with pytest.raises(CheckpointError, match="do not match"):
        load_checkpoint(tmp_path / "mismatch.pt")

    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match=r"plans\.json"):
        load_model(tmp_path)
    with pytest.raises(CheckpointError, match="folds"):
        load_model(good, folds=[0])
