#!/usr/bin/env bash
# Do this project's outputs open in the ecosystem's tools? Reads them with zarr-python 2.x and ome-zarr-py.
#
#   bash scripts/check_interop.sh [WORKDIR]
#
# 1. Creates a throw-away venv (python3.11 -m venv in a temporary folder, removed at exit) with
#    zarr 2.x ("zarr>=2.16,<3", what the vesuvius library pins), ome-zarr-py for zarr 2 ("ome-zarr<0.10":
#    0.10 and later need zarr 3), numpy, tifffile and imagecodecs (LZW TIFFs). Needs a package index.
#    In the venv, interop_check.py --write-inputs writes inputs the way other tools do: a 5D (1, 1, Z, Y, X)
#    OME-Zarr 0.4 (ome-zarr-py on zarr 2, 7.91 µm) and a z-slice TIFF folder with the data server's meta.json.
# 2. In this project's environment (PYTHON, default: python), scripts/interop_make_outputs.py writes a
#    7.91 µm OME-Zarr 0.4 CT input (ome-zarr-py), then with the CLI / npe2 writers: in-memory predict to
#    .zarr and .ome.zarr, block-wise predict to .ome.zarr, postprocess masks (.zarr, .ome.zarr, .tif) and
#    labels (.zarr, .ome.zarr, .tif); it reads the ecosystem's inputs (values, scale, squeeze note) and predicts
#    from the 5D one; WORKDIR/manifest.json records it all (shapes, dtypes, checksums, scales).
# 3. In the venv, scripts/interop_check.py opens every output with zarr.open, OME-Zarr also with
#    ome-zarr-py's Reader, TIFFs with tifffile, checks values, scale and pyramids, and prints a PASS/FAIL
#    table. Exit status 1 when anything failed.
#
# WORKDIR (kept) holds the outputs; without it they go to the temporary folder and are removed.
# INTEROP_PYTHON picks the interpreter of the venv (default python3.11). CI does not run this.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
project_python="${PYTHON:-python}"
venv_python="${INTEROP_PYTHON:-python3.11}"
tmp="$(mktemp -d -t vesuvius-interop.XXXXXX)"
trap 'rm -rf "$tmp"' EXIT
work="${1:-$tmp/outputs}"
if [ -e "$work" ] && [ -n "$(ls -A "$work" 2>/dev/null)" ]; then
    echo "error: $work exists and is not empty; give a new folder" >&2
    exit 2
fi

echo "== venv: $venv_python, zarr 2.x + ome-zarr-py (in $tmp/venv)"
"$venv_python" -m venv "$tmp/venv"
"$tmp/venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    "zarr>=2.16,<3" "ome-zarr<0.10" numpy tifffile imagecodecs

echo "== ecosystem inputs (5D OME-Zarr by ome-zarr-py on zarr 2, z-slice TIFF folder) -> $work/ecosystem"
"$tmp/venv/bin/python" "$here/interop_check.py" --write-inputs "$work/ecosystem"

echo "== writer side: $("$project_python" -c 'import napari_vesuvius, zarr; print("napari-vesuvius",
napari_vesuvius.__version__, "zarr", zarr.__version__)') -> $work"
"$project_python" "$here/interop_make_outputs.py" "$work"

echo "== reader side"
"$tmp/venv/bin/python" "$here/interop_check.py" "$work/manifest.json"
