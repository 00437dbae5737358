"""Writer side of ``scripts/check_interop.sh``: make this project's outputs and a manifest of what they hold.

Runs in the project's own environment (``python scripts/interop_make_outputs.py WORKDIR``). It writes a
small synthetic CT volume as OME-Zarr 0.4 on zarr v2 with 7.91 µm voxels (with ome-zarr-py, as the data
server's scroll volumes are written), then through the public CLI and npe2 writers: in-memory
``predict`` to ``.zarr`` and ``.ome.zarr``, block-wise ``predict`` to ``.ome.zarr``, ``postprocess`` to
``.zarr`` / ``.ome.zarr`` / ``.tif`` and a labels layer through the npe2 labels writers. ``manifest.json``
records for each output its expected shape, dtype, value checksum and samples (from the arrays written, or
read back with this project's reader for computed ones), its physical placement and its pyramid method.
``scripts/interop_check.py`` checks all of it with zarr 2.x and ome-zarr-py in a separate venv.

When ``WORKDIR/ecosystem/inputs.json`` exists (inputs the venv's tools wrote: a 5D OME-Zarr by ome-zarr-py
on zarr 2, a z-slice TIFF folder), what this project's reader finds in them is recorded too, and the 5D one
is predicted to ``pred_from_5d.zarr``.

A step that fails is recorded with its error (the checker reports it as FAIL) and the others still run.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import sys
import traceback
import warnings
from pathlib import Path
from typing import Any

import numpy as np

VOXEL_UM = 7.91
SHAPE = (64, 96, 256)  # above one chunk edge, so every OME-Zarr output has a pyramid
UNIT = "micrometer"
SPATIAL = {"scale": [VOXEL_UM] * 3, "translation": [0.0, 0.0, 0.0], "unit": UNIT}


def fingerprint(array: np.ndarray) -> dict[str, Any]:
    """What the checker compares: shape, dtype, sha256 of the C-order bytes, sum, and a few samples."""
    array = np.ascontiguousarray(array)
    rng = np.random.default_rng(0)
    points = [tuple(int(rng.integers(0, n)) for n in array.shape) for _ in range(8)]
    points.append(tuple(n // 2 for n in array.shape))
    return {
        "shape": list(array.shape),
        "dtype": str(array.dtype),
        "sha256": hashlib.sha256(array.tobytes()).hexdigest(),
        "sum": float(array.astype(np.float64).sum()),
        "samples": [[list(p), array[p].item()] for p in points],
    }


def cli(*argv: str) -> str:
    """Run ``napari-vesuvius ARGV`` in this process; its output, or RuntimeError with it on failure."""
    from napari_vesuvius.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    if code != 0:
        problem = err.getvalue().strip()[-600:]
        raise RuntimeError(f"napari-vesuvius {argv[0]} exit {code}: {problem}")
    return out.getvalue()


def read_level0(path: Path) -> np.ndarray:
    """Level 0 of an output as this project's reader sees it (the values the checker expects)."""
    from napari_vesuvius.core.volume.io import open_volume

    with open_volume(path) as volume:
        return np.asarray(volume.data.compute())


def write_input(path: Path, image: np.ndarray) -> str:
    """The CT input: OME-Zarr 0.4 on zarr v2, two levels (2×2×2 nearest), 7.91 µm, by ome-zarr-py."""
    levels = [image, image[::2, ::2, ::2]]
    try:
        import zarr
        from ome_zarr.format import FormatV04
        from ome_zarr.writer import write_multiscale
    except ImportError:  # fall back to this project's writer
        from napari_vesuvius.core.volume.spatial import Spatial
        from napari_vesuvius.core.volume.write import write_ome_zarr

        write_ome_zarr(path, image, spatial=Spatial(**SPATIAL), downsample="nearest", zarr_format=2)
        return "napari-vesuvius write_ome_zarr"
    import ome_zarr

    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    axes = [{"name": name, "type": "space", "unit": UNIT} for name in "zyx"]
    transforms = [[{"type": "scale", "scale": [VOXEL_UM * 2**i] * 3}] for i in range(len(levels))]
    write_multiscale(levels, group, fmt=FormatV04(), axes=axes, coordinate_transformations=transforms)
    return f"ome-zarr-py {ome_zarr.__version__} (zarr {zarr.__version__})"


def read_ecosystem_input(expected: dict[str, Any]) -> dict[str, Any]:
    """What this project's reader finds in an input another tool wrote (checked by the reader side)."""
    from napari_vesuvius.core.volume.io import open_volume

    entry: dict[str, Any] = {
        "name": f"{expected['name']} (read here)",
        "kind": "project-read",
        "expected": expected,
    }
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the squeeze is announced; its note is checked instead
            with open_volume(expected["path"]) as volume:
                data = np.asarray(volume.data.compute())
                spatial, notes = volume.spatial.to_dict(), list(volume.notes)
        found = fingerprint(data)
        entry["read"] = {"shape": found["shape"], "dtype": found["dtype"], "sha256": found["sha256"],
                         "spatial": spatial, "notes": notes}  # fmt: skip
    except Exception as error:
        entry["error"] = f"{type(error).__name__}: {error}".strip()[-900:]
    print(f"{'read' if 'error' not in entry else 'FAILED to read'} {expected['name']}", file=sys.stderr)
    return entry


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workdir", type=Path, help="empty or new folder for the outputs and manifest.json")
    args = parser.parse_args()
    work: Path = args.workdir
    work.mkdir(parents=True, exist_ok=True)

    from napari_vesuvius.core.synthetic import make_fragment

    fragment = make_fragment(SHAPE, seed=0)
    image, labels = fragment.image, fragment.labels
    outputs: list[dict[str, Any]] = []

    def step(name: str, kind: str, role: str, make: Any, **expect: Any) -> None:
        """Make one output; record its expectation (or the error that prevented it)."""
        path = work / name
        entry: dict[str, Any] = {"name": name, "path": str(path), "kind": kind, "role": role, **expect}
        try:
            made = make(path)
            entry.update(made or {})
            if "values" not in entry:
                entry["values"] = fingerprint(read_level0(path))
        except Exception as error:  # recorded; the checker reports it as FAIL
            entry["error"] = f"{type(error).__name__}: {error}".strip()[-900:]
            traceback.print_exc(file=sys.stderr)
        outputs.append(entry)
        print(f"{'made' if 'error' not in entry else 'FAILED'} {name}", file=sys.stderr)

    def make_input(path: Path) -> dict[str, Any]:
        return {"writer": write_input(path, image), "values": fingerprint(image)}

    step("input.ome.zarr", "ome-zarr", "image", make_input, spatial=SPATIAL, downsample="nearest",
         declares_downsample=False)  # fmt: skip
    model = work / "model.pt"
    run = ("--device", "cpu", "--precision", "fp32", "--quiet")
    try:  # a failure here shows in every prediction's row as well
        cli("init-model", "--preset", "tiny", "--patch-size", "32", "32", "32", "--output", str(model))
    except RuntimeError as error:
        print(f"FAILED init-model: {error}", file=sys.stderr)

    def predict(*extra: str, source: Path = work / "input.ome.zarr") -> Any:
        def make(path: Path) -> None:
            cli("predict", "--model", str(model), "--input", str(source), "--output", str(path), *run, *extra)

        return make

    step("pred.zarr", "zarr", "probability", predict(), spatial=SPATIAL)
    step("pred.ome.zarr", "ome-zarr", "probability", predict(), spatial=SPATIAL, downsample="mean",
         equal_to="pred.zarr")  # fmt: skip
    step("pred.tif", "tiff", "probability", predict(), spatial=SPATIAL, equal_to="pred.zarr")
    blocks = ("--workers", "1", "--block-size", "64", "--chunk-size", "32")
    step("pred_blocks.ome.zarr", "ome-zarr", "probability", predict(*blocks), spatial=SPATIAL,
         downsample="max", close_to={"name": "pred.zarr", "factor": 255, "tolerance": 2})  # fmt: skip

    def postprocess(path: Path) -> None:
        cli("postprocess", str(work / "pred.zarr"), "--output", str(path), "--quiet")

    mask_checks = {"spatial": SPATIAL, "allowed_values": [0, 1]}
    step("mask.zarr", "zarr", "mask", postprocess, **mask_checks)
    step("mask.ome.zarr", "ome-zarr", "mask", postprocess, downsample="max", equal_to="mask.zarr",
         **mask_checks)  # fmt: skip
    step("mask.tif", "tiff", "mask", postprocess, equal_to="mask.zarr", **mask_checks)

    # a Labels layer as napari hands it to the npe2 writer: data plus the layer state (scale, units...)
    meta = {"name": "labels", "scale": (VOXEL_UM,) * 3, "translate": (0.0,) * 3, "units": (UNIT,) * 3}

    def labels_writer(writer: str) -> Any:
        def make(path: Path) -> dict[str, Any]:
            from napari_vesuvius import _writer

            written = getattr(_writer, writer)(str(path), labels, meta)
            if Path(written[0]) != path:
                raise RuntimeError(f"{writer} wrote {written[0]}, not {path}")
            return {"values": fingerprint(labels)}

        return make

    label_checks = {"spatial": SPATIAL, "allowed_values": [0, 1, 2]}
    step("labels.zarr", "zarr", "labels", labels_writer("write_labels_zarr"), **label_checks)
    step("labels.ome.zarr", "ome-zarr", "labels", labels_writer("write_labels_zarr"), downsample="nearest",
         **label_checks)  # fmt: skip
    step("labels.tif", "tiff", "labels", labels_writer("write_labels_tif"), **label_checks)

    ecosystem = work / "ecosystem" / "inputs.json"  # written in the venv by interop_check.py --write-inputs
    if ecosystem.exists():
        for expected in json.loads(ecosystem.read_text())["inputs"]:
            outputs.append(read_ecosystem_input(expected))
        from_5d = predict(source=work / "ecosystem" / "eco_5d.ome.zarr")
        step("pred_from_5d.zarr", "zarr", "probability", from_5d, spatial=SPATIAL)
        blocks_5d = predict(*blocks, source=work / "ecosystem" / "eco_5d.ome.zarr")
        near = {"name": "pred_from_5d.zarr", "factor": 255, "tolerance": 2}
        step("pred_blocks_from_5d.ome.zarr", "ome-zarr", "probability", blocks_5d, spatial=SPATIAL,
             downsample="max", close_to=near)  # fmt: skip

    manifest = {"voxel_um": VOXEL_UM, "outputs": outputs}
    (work / "manifest.json").write_text(json.dumps(manifest, indent=1))
    failed = [entry["name"] for entry in outputs if "error" in entry]
    print(f"wrote {work / 'manifest.json'}: {len(outputs)} outputs, {len(failed)} not made {failed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
