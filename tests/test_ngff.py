"""NGFF metadata (core.volume.ngff): attributes built with ome-zarr-models, lenient reading of 0.1-0.5."""

from __future__ import annotations

import numpy as np
import pytest
from ome_zarr_models.v04.image import ImageAttrs as ImageAttrsV04
from ome_zarr_models.v05.image import ImageAttrs as ImageAttrsV05

from napari_vesuvius.core.errors import VolumeError
from napari_vesuvius.core.volume.ngff import halving_factors, multiscales_attrs, read_ngff_image
from napari_vesuvius.core.volume.ome_zarr_write import (
    default_downsample,
    downsample_block,
    pyramid_shapes,
)
from napari_vesuvius.core.volume.spatial import Spatial

SHAPES = [(40, 70, 33), (20, 35, 17), (10, 18, 9)]
SPATIAL = Spatial((7.91, 7.91, 7.91), (1.0, 2.0, 3.0), "µm")


def _transforms(attrs: dict, version: str) -> list[list[dict]]:
    multiscale = attrs["multiscales"][0] if version == "0.4" else attrs["ome"]["multiscales"][0]
    return [d["coordinateTransformations"] for d in multiscale["datasets"]]


@pytest.mark.parametrize("zarr_format", [2, 3])
@pytest.mark.parametrize("method", ["mean", "max", "nearest"])
def test_multiscales_attrs_per_level_placement(zarr_format: int, method: str) -> None:
    attrs = multiscales_attrs(
        zarr_format=zarr_format, level_shapes=SHAPES, spatial=SPATIAL, downsample=method, name="scroll"
    )
    version = "0.4" if zarr_format == 2 else "0.5"
    if zarr_format == 2:
        ImageAttrsV04.model_validate(attrs)
        multiscale = attrs["multiscales"][0]
        assert multiscale["version"] == "0.4" and "ome" not in attrs
    else:
        ImageAttrsV05.model_validate(attrs["ome"])
        assert attrs["ome"]["version"] == "0.5" and set(attrs) == {"ome"}
        multiscale = attrs["ome"]["multiscales"][0]
    assert multiscale["type"] == method and multiscale["name"] == "scroll"
    assert multiscale["axes"] == [{"name": n, "type": "space", "unit": "micrometer"} for n in "zyx"]
    for level, transforms in enumerate(_transforms(attrs, version)):
        expected = SPATIAL.downsampled([2.0**level] * 3, method)  # every step is a ceil halving
        assert transforms[0] == {"type": "scale", "scale": list(expected.scale)}
        assert transforms[1] == {
            "type": "translation",
            "translation": pytest.approx(list(expected.translation)),
        }
    pooled = _transforms(attrs, version)[1][1]["translation"]
    assert pooled == ([1.0, 2.0, 3.0] if method == "nearest" else pytest.approx([4.955, 5.955, 6.955]))


def test_multiscales_attrs_without_unit_and_custom_paths() -> None:
    attrs = multiscales_attrs(
        zarr_format=2, level_shapes=SHAPES[:2], spatial=Spatial(), downsample="mean", paths=["s0", "s1"]
    )
    multiscale = attrs["multiscales"][0]
    assert [d["path"] for d in multiscale["datasets"]] == ["s0", "s1"]
    assert all("unit" not in axis for axis in multiscale["axes"]) and "name" not in multiscale
    with pytest.raises(ValueError, match="3D"):
        multiscales_attrs(zarr_format=2, level_shapes=[(4, 4)], spatial=Spatial(), downsample="mean")


def test_halving_factors_and_pyramid_shapes() -> None:
    assert pyramid_shapes((300, 129, 20), (128, 128, 20)) == [(300, 129, 20), (150, 65, 10), (75, 33, 5)]
    assert pyramid_shapes((10, 10, 10), (16, 16, 16)) == [(10, 10, 10)]
    assert halving_factors([(5, 1, 8), (3, 1, 4), (2, 1, 2)]) == [(1, 1, 1), (2, 2, 2), (4, 4, 4)]
    assert halving_factors([(9, 9, 9), (3, 3, 3)]) == [(1, 1, 1), (3, 3, 3)]  # non-halving: the ratio


def test_downsample_block_methods_keep_dtype() -> None:
    block = np.arange(27, dtype=np.uint8).reshape(3, 3, 3)
    mean = downsample_block(block, "mean", np.uint8)
    assert mean.dtype == np.uint8 and mean.shape == (2, 2, 2)
    assert mean[0, 0, 0] == 7 and mean[1, 1, 1] == block[2, 2, 2]  # 6.5 rounds half up
    assert mean[1, 0, 0] == 20  # a partial block pools what it has: mean(18, 19, 21, 22) = 20
    assert np.array_equal(downsample_block(block, "nearest", np.uint8), block[::2, ::2, ::2])
    assert downsample_block(block, "max", np.uint8)[0, 0, 0] == block[:2, :2, :2].max()
    half = downsample_block(np.full((4, 4, 4), 0.25, np.float16), "mean", np.float16)
    assert half.dtype == np.float16 and np.all(half == np.float16(0.25))
    rounded = downsample_block(np.array([[[0, 1], [1, 1]], [[1, 1], [1, 1]]], np.uint8), "mean", np.uint8)
    assert rounded.item() == 1  # 7/8 rounds to 1, not truncated to 0
    with pytest.raises(ValueError, match="unknown downsampling"):
        downsample_block(block, "median", np.uint8)  # type: ignore[arg-type]
    assert default_downsample(np.float32) == "mean" and default_downsample(np.uint8) == "nearest"


def test_read_ngff_04_with_multiscale_transformations() -> None:
    """Dataset transformations are composed with the multiscale-level ones (scale, then translation)."""
    attrs = {
        "multiscales": [
            {
                "version": "0.4",
                "name": "img",
                "axes": [{"name": n, "type": "space", "unit": "um"} for n in "zyx"],
                "datasets": [
                    {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1, 1, 1]}]},
                    {
                        "path": "1",
                        "coordinateTransformations": [
                            {"type": "scale", "scale": [2, 2, 2]},
                            {"type": "translation", "translation": [0.5, 0.5, 0.5]},
                        ],
                    },
                ],
                "coordinateTransformations": [
                    {"type": "scale", "scale": [7.91, 7.91, 7.91]},
                    {"type": "translation", "translation": [10, 20, 30]},
                ],
            }
        ]
    }
    image = read_ngff_image(attrs, {"0": (8, 8, 8), "1": (4, 4, 4)}, "x.ome.zarr")
    assert (
        image.version == "0.4" and image.paths == ("0", "1") and image.squeeze == () and image.name == "img"
    )
    assert image.spatials[0] == Spatial((7.91,) * 3, (10, 20, 30), "micrometer")
    assert image.spatials[1].scale == pytest.approx((15.82,) * 3)
    assert image.spatials[1].translation == pytest.approx((10 + 3.955, 20 + 3.955, 30 + 3.955))
    assert image.spatials[0].source == "ome-zarr"


def test_read_ngff_05_and_old_versions() -> None:
    v05 = multiscales_attrs(zarr_format=3, level_shapes=SHAPES, spatial=SPATIAL, downsample="max")
    image = read_ngff_image(v05, {str(i): s for i, s in enumerate(SHAPES)}, "v.ome.zarr")
    assert image.version == "0.5" and image.spatials[2] == SPATIAL.downsampled((4, 4, 4), "max")
    # 0.3: axes as names; 0.1/0.2: no axes at all (t, c, z, y, x), no transformations
    v03 = {"multiscales": [{"version": "0.3", "axes": ["c", "z", "y", "x"], "datasets": [{"path": "0"}]}]}
    image = read_ngff_image(v03, {"0": (1, 4, 5, 6)}, "v3")
    assert image.squeeze == (0,) and image.axis_names == ("c", "z", "y", "x") and image.spatials[0].is_default
    v01 = {"multiscales": [{"version": "0.1", "datasets": [{"path": "a"}, {"path": "b"}]}]}
    image = read_ngff_image(v01, {"a": (1, 1, 8, 8, 8), "b": (1, 1, 4, 4, 4)}, "v1")
    assert image.squeeze == (0, 1) and image.axis_names == tuple("tczyx")
    assert image.spatials[1].scale == (2.0, 2.0, 2.0) and image.notes  # assumed from the shapes


@pytest.mark.parametrize(
    ("axes", "shape", "match"),
    [
        (["c", "z", "y", "x"], (3, 4, 4, 4), r"axis 'c' \(channel\) has 3 channels.*single channel"),
        (["t", "z", "y", "x"], (5, 4, 4, 4), r"axis 't' \(time\) has 5 time points"),
        (["c", "y", "x"], (1, 4, 4), r"2 spatial axes"),
        (["z", "y"], (4, 4, 4), r"do not match"),
    ],
)
def test_read_ngff_refusals_name_the_file(axes: list[str], shape: tuple[int, ...], match: str) -> None:
    attrs = {"multiscales": [{"version": "0.4", "axes": axes, "datasets": [{"path": "0"}]}]}
    with pytest.raises(VolumeError, match=match) as info:
        read_ngff_image(attrs, {"0": shape}, "scan.ome.zarr")
    assert str(info.value).startswith("scan.ome.zarr: ")


def test_read_ngff_missing_level_and_bad_transformations() -> None:
    attrs = {"multiscales": [{"version": "0.4", "axes": list("zyx"), "datasets": [{"path": "0"}]}]}
    with pytest.raises(VolumeError, match="level '0' is missing"):
        read_ngff_image(attrs, {}, "m.ome.zarr")
    bad = {"type": "scale", "scale": [1, 0, 1]}  # a zero scale: ignored, with a note
    attrs["multiscales"][0]["datasets"][0]["coordinateTransformations"] = [bad]
    image = read_ngff_image(attrs, {"0": (2, 2, 2)}, "m.ome.zarr")
    assert image.spatials[0].is_default and "coordinateTransformations" in image.notes[0]
