"""Reader side of ``scripts/check_interop.sh``: read this project's outputs with the ecosystem's tools.

Runs inside the throw-away venv (zarr 2.x, ome-zarr-py for zarr 2, tifffile, numpy; *not* this project):
``python interop_check.py WORKDIR/manifest.json``. Every output listed by ``interop_make_outputs.py`` is
opened with ``zarr.open`` (zarr-python 2.x), OME-Zarr groups also with ome-zarr-py's ``Reader`` and TIFFs
with tifffile; values are compared with the manifest (checksum, samples), physical scale with the expected
7.91 µm at level 0 (×2 per level, pooled levels' origin moved by half a block) and pyramid levels with the
declared downsampling; what this project's reader found in the ecosystem's inputs (recorded by the writer
side) is checked too. Prints a PASS/FAIL table; exit status 1 when anything failed.

``python interop_check.py --write-inputs WORKDIR/ecosystem`` first writes those inputs with the venv's tools:
a 5D (1, 1, Z, Y, X) OME-Zarr 0.4 by ome-zarr-py on zarr 2 and a z-slice TIFF folder with ``meta.json``.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

VOXEL_UM = 7.91
UNIT_NAMES = {"micrometer", "micron", "microns", "um", "µm", "μm", "\\u00b5m"}
rows: list[tuple[str, str, bool, str]] = []


def record(output: str, check: str, ok: bool, detail: str = "") -> bool:
    rows.append((output, check, bool(ok), detail))
    return bool(ok)


def sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def check_values(name: str, array: np.ndarray, expected: dict[str, Any], how: str) -> None:
    """Shape, dtype, checksum and samples of level 0 against the manifest."""
    problems = []
    if list(array.shape) != expected["shape"]:
        problems.append(f"shape {list(array.shape)} != {expected['shape']}")
    if str(array.dtype) != expected["dtype"]:
        problems.append(f"dtype {array.dtype} != {expected['dtype']}")
    if not problems:
        bad = [(p, v) for p, v in expected["samples"] if array[tuple(p)].item() != v]
        if bad:
            got = array[tuple(bad[0][0])].item()
            problems.append(
                f"{len(bad)} samples differ (at {bad[0][0]}: {got!r}, want {bad[0][1]!r}); "
                f"sum {float(array.astype(np.float64).sum()):g}, want {expected['sum']:g}"
            )
        elif sha256(array) != expected["sha256"]:
            problems.append(f"checksum differs (sum {float(array.sum()):g} vs {expected['sum']:g})")
    detail = "; ".join(problems) or f"{tuple(array.shape)} {array.dtype}, sha256 {expected['sha256'][:12]}…"
    record(name, f"values ({how})", not problems, detail)


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)


def expected_level(spatial: dict[str, Any], factor: list[float], method: str) -> tuple[list, list]:
    """Scale and translation of a level downsampled by ``factor`` from level 0 (NGFF / napari centres)."""
    scale = [s * f for s, f in zip(spatial["scale"], factor, strict=False)]
    if method == "nearest":
        return scale, list(spatial["translation"])
    return scale, [
        t + s * (f - 1) / 2 for t, s, f in zip(spatial["translation"], spatial["scale"], factor, strict=False)
    ]


def pooled(level0: np.ndarray, factor: list[int], method: str) -> np.ndarray:
    """Level 0 reduced by integer ``factor`` with ``method`` (the reference a pyramid level is checked on)."""
    if method == "nearest":
        return level0[:: factor[0], :: factor[1], :: factor[2]]
    shape = [n // f for n, f in zip(level0.shape, factor, strict=False)]
    crop = level0[: shape[0] * factor[0], : shape[1] * factor[1], : shape[2] * factor[2]]
    blocks = crop.reshape(shape[0], factor[0], shape[1], factor[1], shape[2], factor[2])
    if method == "max":
        return blocks.max(axis=(1, 3, 5))
    return blocks.astype(np.float64).mean(axis=(1, 3, 5))


def check_pyramid(name: str, levels: list[np.ndarray], method: str) -> None:
    """Every coarser level equals level 0 reduced with the declared method (mean within rounding)."""
    base = levels[0]
    for index, level in enumerate(levels[1:], 1):
        ratio = [b / n for b, n in zip(base.shape, level.shape, strict=False)]
        factor = [round(r) for r in ratio]
        if any(abs(r - f) > 1e-9 for r, f in zip(ratio, factor, strict=False)):
            record(name, f"level {index} values", False, f"shape {level.shape} not an integer reduction")
            continue
        reference = pooled(base, factor, method)
        if reference.shape != level.shape:
            record(name, f"level {index} values", False, f"shape {level.shape} != {reference.shape}")
            continue
        diff = np.abs(level.astype(np.float64) - reference.astype(np.float64)).max()
        tolerance = 0.0 if method != "mean" else (1.0 if level.dtype.kind in "iu" else 2e-3)
        record(
            name, f"level {index} values ({method})", diff <= tolerance, f"max |Δ| {diff:g} (≤ {tolerance:g})"
        )


def check_plain_zarr(entry: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    import zarr

    name, path = entry["name"], entry["path"]
    node = zarr.open(path, mode="r")
    if not record(
        name, "zarr 2.x open", isinstance(node, zarr.Array), f"{type(node).__name__} via zarr.open"
    ):
        return
    array = node[...]
    arrays[name] = array
    check_values(name, array, entry["values"], f"zarr {zarr.__version__}")
    stored = dict(node.attrs).get("vesuvius_spatial")
    check_spatial_record(name, "scale (zarr attrs)", stored, entry.get("spatial"))


def check_spatial_record(name: str, check: str, stored: Any, expected: dict[str, Any] | None) -> None:
    if expected is None:
        return
    if not isinstance(stored, dict):
        record(name, check, False, f"no spatial record (attrs: {stored!r})")
        return
    ok = (
        all(close(a, b) for a, b in zip(stored.get("scale", []), expected["scale"], strict=False))
        and len(stored.get("scale", [])) == 3
        and all(
            close(a, b)
            for a, b in zip(stored.get("translation", [0, 0, 0]), expected["translation"], strict=False)
        )
        and stored.get("unit") == expected["unit"]
    )
    record(
        name,
        check,
        ok,
        f"scale {stored.get('scale')} {stored.get('unit')}, origin {stored.get('translation')}",
    )


def check_ome_zarr(entry: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    import zarr
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    name, path = entry["name"], entry["path"]
    group = zarr.open(path, mode="r")
    if not record(
        name, "zarr 2.x open", isinstance(group, zarr.Group), f"{type(group).__name__} via zarr.open"
    ):
        return
    multiscales = dict(group.attrs).get("multiscales") or [{}]
    meta = multiscales[0]
    version = meta.get("version")
    record(name, "NGFF version", version == "0.4", f"multiscales version {version!r}")
    paths = [d.get("path") for d in meta.get("datasets", [])]
    zarr_levels = [group[p][...] for p in paths]
    # .zarray without the key means ".", which ome-zarr-py (and NGFF >= 0.3) do not read
    separators = sorted(
        {json.loads(group.store[f"{p}/.zarray"]).get("dimension_separator", ".") for p in paths}
    )
    record(name, "chunk keys '/' (NGFF ≥0.3)", separators == ["/"], f"dimension_separator {separators}")
    record(
        name,
        "levels (zarr 2.x)",
        len(zarr_levels) >= 2,
        f"{len(paths)} levels {[list(a.shape) for a in zarr_levels]}",
    )
    if not zarr_levels:
        return
    location = parse_url(path, mode="r")
    if not record(name, "ome-zarr-py parse_url", location is not None, "OME-Zarr location"):
        return
    nodes = list(Reader(location)())
    if not record(name, "ome-zarr-py Reader", bool(nodes) and bool(nodes[0].data), f"{len(nodes)} node(s)"):
        return
    node = nodes[0]
    levels = [np.asarray(level) for level in node.data]
    arrays[name] = levels[0]
    same = len(levels) == len(zarr_levels) and all(
        np.array_equal(a, b) for a, b in zip(levels, zarr_levels, strict=False)
    )
    record(name, "ome-zarr-py levels = zarr", same, f"{len(levels)} levels")
    check_values(name, levels[0], entry["values"], "ome-zarr-py level 0")
    method = entry.get("downsample")
    declared = meta.get("type")
    if method and entry.get("declares_downsample", True):
        record(name, "declared downsampling", declared is not None and method in str(declared).lower(),
               f"type {declared!r}, expected {method}")  # fmt: skip
    if method:
        check_pyramid(name, levels, method)
    axes = node.metadata.get("axes") or []
    units = [a.get("unit") if isinstance(a, dict) else None for a in axes]
    spatial = entry.get("spatial")
    if spatial:
        ok = len(axes) == 3 and all(str(u).lower() in UNIT_NAMES for u in units)
        record(
            name, "axes + units", ok, f"{[a.get('name') if isinstance(a, dict) else a for a in axes]} {units}"
        )
        transforms = node.metadata.get("coordinateTransformations") or []
        for index, level in enumerate(levels):
            check_level_transform(name, index, level.shape, levels[0].shape, transforms, spatial, method)


def check_level_transform(
    name: str, index: int, shape: tuple, base: tuple, transforms: list, spatial: dict, method: str | None
) -> None:
    if index >= len(transforms) or not transforms[index]:
        record(name, f"level {index} scale", False, "no coordinateTransformations")
        return
    scale = next((t["scale"] for t in transforms[index] if t.get("type") == "scale"), None)
    translation = next(
        (t["translation"] for t in transforms[index] if t.get("type") == "translation"), [0.0] * 3
    )
    factor = [b / n for b, n in zip(base, shape, strict=False)]
    want_scale, want_translation = expected_level(spatial, factor, method or "nearest")
    ok = scale is not None and len(scale) == 3 and len(translation) == 3
    ok = ok and all(close(a, b) for a, b in zip(scale, want_scale, strict=False))
    ok = ok and all(close(a, b) for a, b in zip(translation, want_translation, strict=False))
    shown = [round(v, 4) for v in scale or []], [round(v, 4) for v in translation]
    wanted = [round(v, 4) for v in want_scale], [round(v, 4) for v in want_translation]
    record(name, f"level {index} scale/translation", ok, f"{shown} (want {wanted})")


def check_tiff(entry: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    import tifffile

    name, path = entry["name"], entry["path"]
    with tifffile.TiffFile(path) as tif:
        array = tif.asarray()
        imagej = tif.imagej_metadata or {}
        described = (tif.shaped_metadata or ({},))[0] if tif.is_shaped else {}
        page = tif.pages[0]
        xres = page.tags.get("XResolution")
        unit_tag = page.tags.get("ResolutionUnit")
    arrays[name] = array
    check_values(name, array, entry["values"], f"tifffile {tifffile.__version__}")
    spatial = entry.get("spatial")
    if not spatial:
        return
    if imagej:
        spacing, unit = imagej.get("spacing"), str(imagej.get("unit", ""))
        ok = spacing is not None and close(float(spacing), spatial["scale"][0]) and unit.lower() in UNIT_NAMES
        record(name, "ImageJ z spacing", ok, f"spacing {spacing!r} unit {unit!r}")
    else:  # dtypes ImageJ cannot hold (float16): the exact record in tifffile's JSON description
        check_spatial_record(name, "scale (tifffile JSON)", described.get("vesuvius_spatial"), spatial)
    size = None
    if xres is not None:
        numerator, denominator = xres.value
        per_unit = numerator / denominator if denominator else 0.0
        to_um = {1: 1.0, 2: 25400.0, 3: 10000.0}.get(int(unit_tag.value) if unit_tag else 1, 1.0)
        size = to_um / per_unit if per_unit else None
    ok = size is not None and math.isclose(size, spatial["scale"][2], rel_tol=1e-4)
    record(
        name, "TIFF x/y resolution", ok, f"voxel {size!r} µm from XResolution {xres.value if xres else None}"
    )


def cross_checks(entry: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    name = entry["name"]
    if name not in arrays:
        return
    if "allowed_values" in entry:
        values = sorted(int(v) for v in np.unique(arrays[name]))
        ok = set(values) <= set(entry["allowed_values"])
        record(name, "value set", ok, f"{values} ⊆ {entry['allowed_values']}")
    other = entry.get("equal_to")
    if other:
        ok = other in arrays and np.array_equal(arrays[name], arrays[other])
        record(name, f"equals {other}", ok, "level 0 identical" if ok else "differs or missing")
    near = entry.get("close_to")
    if near:
        if near["name"] not in arrays:
            record(name, f"≈ {near['name']} × {near['factor']}", False, "reference missing")
            return
        reference = arrays[near["name"]].astype(np.float64) * near["factor"]
        diff = np.abs(arrays[name].astype(np.float64) - reference).max()
        record(name, f"≈ {near['name']} × {near['factor']}", diff <= near["tolerance"], f"max |Δ| {diff:.3g}")


def print_table(order: list[str]) -> None:
    rows.sort(key=lambda row: order.index(row[0]) if row[0] in order else len(order))
    width = [max(len(str(r[i])) for r in [*rows, ("output", "check", True, "")]) for i in range(2)]
    print(f"{'output':<{width[0]}}  {'check':<{width[1]}}  result  detail")
    print("-" * (width[0] + width[1] + 24))
    for output, check, ok, detail in rows:
        print(f"{output:<{width[0]}}  {check:<{width[1]}}  {'PASS' if ok else 'FAIL':<6}  {detail}")
    failed = sum(not r[2] for r in rows)
    print(f"\n{len(rows) - failed} passed, {failed} failed")


def write_inputs(folder: Path) -> None:
    """Inputs written by the ecosystem's own tools, for this project to read (``--write-inputs``).

    A 5D ``t, c, z, y, x`` OME-Zarr 0.4 of shape (1, 1, Z, Y, X) with 7.91 µm voxels, written by ome-zarr-py
    on zarr 2 (as napari-ome-zarr opens it), and a folder of 2D TIFF slices with the data server's
    ``meta.json``. ``inputs.json`` lists them with the (z, y, x) values and placement a reader must find.
    """
    import tifffile
    import zarr
    from ome_zarr.format import FormatV04
    from ome_zarr.writer import write_multiscale

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    spatial = {"scale": [VOXEL_UM] * 3, "translation": [0.0] * 3, "unit": "micrometer"}
    volume = rng.integers(1, 255, size=(32, 64, 64), dtype=np.uint8)
    levels = [volume[None, None], volume[None, None, ::2, ::2, ::2]]
    group = zarr.open_group(str(folder / "eco_5d.ome.zarr"), mode="w")
    axes = [{"name": "t", "type": "time"}, {"name": "c", "type": "channel"}]
    axes += [{"name": name, "type": "space", "unit": "micrometer"} for name in "zyx"]
    transforms = [[{"type": "scale", "scale": [1.0, 1.0] + [VOXEL_UM * 2**i] * 3}] for i in range(2)]
    write_multiscale(levels, group, fmt=FormatV04(), axes=axes, coordinate_transformations=transforms)
    slices = rng.integers(0, 65535, size=(12, 40, 48), dtype=np.uint16)
    (folder / "eco_slices").mkdir()
    for index, plane in enumerate(slices):
        tifffile.imwrite(folder / "eco_slices" / f"{index:05d}.tif", plane)
    meta = {
        "type": "vol",
        "uuid": "eco_slices",
        "width": 48,
        "height": 40,
        "slices": 12,
        "voxelsize": VOXEL_UM,
    }
    (folder / "eco_slices" / "meta.json").write_text(json.dumps(meta))
    inputs = []
    for name, data, note in (("eco_5d.ome.zarr", volume, "squeez"), ("eco_slices", slices, None)):
        expected = {"shape": list(data.shape), "dtype": str(data.dtype), "sha256": sha256(data)}
        inputs.append({"name": name, "path": str(folder / name), "values": expected, "spatial": spatial,
                       "note": note})  # fmt: skip
    (folder / "inputs.json").write_text(json.dumps({"writer": writer_versions(), "inputs": inputs}, indent=1))
    print(f"wrote {len(inputs)} ecosystem inputs to {folder} ({writer_versions()})")


def writer_versions() -> str:
    from importlib.metadata import version

    return f"zarr {version('zarr')}, ome-zarr-py {version('ome-zarr')}, tifffile {version('tifffile')}"


def check_project_read(entry: dict[str, Any]) -> None:
    """What this project's reader found in an ecosystem input (recorded by the writer side)."""
    name, seen, expected = entry["name"], entry["read"], entry["expected"]
    same = all(seen[key] == expected["values"][key] for key in ("shape", "dtype", "sha256"))
    record(
        name,
        "project reads values",
        same,
        f"{tuple(seen['shape'])} {seen['dtype']} (want {expected['values']['shape']})",
    )
    check_spatial_record(name, "project reads scale", seen["spatial"], expected["spatial"])
    if expected.get("note"):
        notes = seen.get("notes", [])
        ok = any(expected["note"] in note for note in notes)
        record(name, "project says it squeezed", ok, (notes or ["no note"])[0][:90])


def main() -> int:
    from importlib.metadata import version

    import zarr

    if sys.argv[1] == "--write-inputs":
        write_inputs(Path(sys.argv[2]))
        return 0
    manifest_path = Path(sys.argv[1])
    manifest = json.loads(manifest_path.read_text())
    print(
        f"reader side: python {sys.version.split()[0]}, zarr {zarr.__version__}, "
        f"ome-zarr-py {version('ome-zarr')}"
    )
    arrays: dict[str, np.ndarray] = {}
    checkers = {"zarr": check_plain_zarr, "ome-zarr": check_ome_zarr, "tiff": check_tiff}
    for entry in manifest["outputs"]:
        if "error" in entry:
            what = "read here" if entry["kind"] == "project-read" else "written"
            record(entry["name"], what, False, entry["error"].replace("\n", " ")[-300:])
            continue
        try:
            if entry["kind"] == "project-read":
                check_project_read(entry)
                continue
            checkers[entry["kind"]](entry, arrays)
        except Exception as error:  # a reader refusing the file is a failure of the output, reported
            record(entry["name"], "read", False, f"{type(error).__name__}: {error}"[:300])
    for entry in manifest["outputs"]:
        cross_checks(entry, arrays)
    print_table([entry["name"] for entry in manifest["outputs"]])
    return 1 if any(not r[2] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
