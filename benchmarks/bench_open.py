"""Benchmark: open a ~4 GB uint8 volume (LZW TIFF and zarr) lazily in napari; time and peak RSS.

Writes the volumes into ``--workdir`` (reused when present), then measures each case in a fresh
subprocess so its peak RSS is clean: time until the napari layer is added (``ViewerModel`` + our
reader's layer data, no Qt window) and until the slice at the current z is in memory. The naive
reference (``tifffile.imread`` of the whole TIFF) runs in the same way for a ratio.

    python benchmarks/bench_open.py                # 1600³ (4.1 GB), a few minutes to write once
    python benchmarks/bench_open.py --size 400     # quick run
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TARGET_SECONDS, TARGET_RSS_MB = 1.0, 400.0


def synthetic_volume(size: int):  # -> dask.array.Array
    """Compressible, structured uint8 content: wavy bands (sheets) inside a cylindrical scan region.

    The pattern repeats every 24 slices, so the 24 distinct slices are built once and the volume is
    assembled from them (generation costs nothing next to LZW encoding).
    """
    import dask.array as da
    import numpy as np

    y, x = np.ogrid[:size, :size]
    offset = (8 * np.sin(y / 97.0) + 8 * np.sin(x / 131.0)).astype(np.int32)
    inside = (y - size / 2) ** 2 + (x - size / 2) ** 2 < (0.48 * size) ** 2
    band_values = np.repeat(np.array([40, 90, 160, 210], np.uint8), 6)
    period = np.stack([np.where(inside, band_values[(z + offset) % 24], 0) for z in range(24)]).astype(
        np.uint8
    )

    def block(_: np.ndarray, block_info: dict | None = None) -> np.ndarray:
        (z0, z1), _y, _x = block_info[None]["array-location"]
        return period[np.arange(z0, z1) % 24]

    template = da.zeros((size, size, size), dtype=np.uint8, chunks=(16, size, size))
    return template.map_blocks(block, dtype=np.uint8)


def ensure_volumes(workdir: Path, size: int) -> dict[str, Path]:
    """Write the TIFF and zarr (atomically, so an existing file is always complete) unless present."""
    from napari_vesuvius.core.progress import ConsoleProgress, run_job
    from napari_vesuvius.core.volume_io import iter_write_volume

    workdir.mkdir(parents=True, exist_ok=True)
    paths = {"tiff": workdir / f"open_{size}.tif", "zarr": workdir / f"open_{size}.zarr"}
    for kind, path in paths.items():
        if path.exists():
            print(f"reusing {path}")
            continue
        started = time.perf_counter()
        run_job(iter_write_volume(path, synthetic_volume(size)), ConsoleProgress(f"writing {kind}"))
        print(f"wrote {path} in {time.perf_counter() - started:.1f} s")
    return paths


def child(mode: str, path: str) -> None:
    """Run one measurement in this (fresh) process and print a JSON line."""
    import numpy as np

    def rss() -> float:
        """Peak RSS (VmHWM) of this process in MiB; unlike ru_maxrss it is not inherited from the parent."""
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    if mode == "naive":
        import tifffile

        baseline = rss()
        started = time.perf_counter()
        data = tifffile.imread(path)
        elapsed = time.perf_counter() - started
        print(
            json.dumps(
                {
                    "layer_s": elapsed,
                    "slice_s": elapsed,
                    "rss_mb": rss(),
                    "base_mb": baseline,
                    "shape": list(data.shape),
                }
            )
        )
        return
    from napari.components import ViewerModel

    from napari_vesuvius._reader import napari_get_reader

    viewer = ViewerModel()
    # napari builds its unit registry (pint) when the first layer of a session is created: a one-time
    # cost of napari itself (~1 s here), paid before timing so the numbers are about our reader.
    warm_started = time.perf_counter()
    viewer.layers.remove(viewer.add_image(np.zeros((2, 2, 2), np.uint8)))
    warmup_s = time.perf_counter() - warm_started
    if mode == "lazy-nocache":
        from napari.utils import resize_dask_cache

        resize_dask_cache(0)
    baseline = rss()

    def open_and_slice() -> tuple[float, float, np.ndarray, object]:
        started = time.perf_counter()
        reader = napari_get_reader(path)
        layers = [viewer._add_layer_from_data(*layer_data)[0] for layer_data in reader(path)]
        layer_s = time.perf_counter() - started
        layer = layers[0]
        data = layer.data[0] if layer.multiscale else layer.data
        first = np.asarray(data[viewer.dims.current_step[0]])
        return layer_s, time.perf_counter() - started, first, layer

    layer_s, slice_s, first, layer = open_and_slice()
    viewer.layers.remove(layer)
    _, again_s, _, layer = open_and_slice()  # browsing the next volume: imports and caches are warm
    data = layer.data[0] if layer.multiscale else layer.data
    result = {
        "layer_s": layer_s,
        "slice_s": slice_s,
        "again_s": again_s,
        "rss_mb": rss(),
        "base_mb": baseline,
        "warmup_s": warmup_s,
        "shape": list(data.shape),
        "z": int(viewer.dims.current_step[0]),
        "slice_mean": float(first.mean()),
        "chunks": [int(c[0]) for c in data.chunks],
    }
    print(json.dumps(result))


def measure(mode: str, path: Path) -> dict:
    output = subprocess.run(
        [sys.executable, __file__, "--child", mode, str(path)],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "QT_QPA_PLATFORM": "offscreen"},
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workdir", type=Path, default=REPO / "bench_data")
    parser.add_argument("--size", type=int, default=1600, help="edge of the cubic volume (1600 → 4.1 GB)")
    parser.add_argument(
        "--naive-size",
        type=int,
        default=None,
        help="edge for the naive full read (default: --size when it fits in RAM)",
    )
    parser.add_argument("--child", nargs=2, metavar=("MODE", "PATH"), help=argparse.SUPPRESS)
    parser.add_argument("--no-report", action="store_true", help="do not write docs/benchmarks.md")
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return

    sys.path.insert(0, str(REPO))
    from benchmarks._report import markdown_table, write_section

    paths = ensure_volumes(args.workdir, args.size)
    available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    naive_size = args.naive_size or (args.size if 2 * args.size**3 < available else 1024)
    naive_path = (
        paths["tiff"] if naive_size == args.size else ensure_volumes(args.workdir, naive_size)["tiff"]
    )

    import numpy as np

    cases = (
        ("TIFF (LZW) lazy", "lazy", paths["tiff"]),
        ("zarr lazy", "lazy", paths["zarr"]),
        ("zarr lazy, napari dask cache off", "lazy-nocache", paths["zarr"]),
        ("naive tifffile.imread", "naive", naive_path),
    )
    rows, results = [], {}
    for label, mode, path in cases:
        result = measure(mode, path)
        results[label] = result
        print(label, json.dumps(result))
        ok = result["slice_s"] < TARGET_SECONDS and result["rss_mb"] < TARGET_RSS_MB
        rows.append(
            [
                label,
                "x".join(map(str, result["shape"])),
                f"{np.prod(result['shape']) / 1e9:.2f}",
                result["layer_s"],
                result["slice_s"],
                result.get("again_s", "—"),
                f"{result['rss_mb']:.0f}",
                f"{result['base_mb']:.0f}",
                ("yes" if ok else "no") if mode != "naive" else "—",
            ]
        )
    lazy, naive = results["TIFF (LZW) lazy"], results["naive tifffile.imread"]
    scale = float(np.prod(lazy["shape"]) / np.prod(naive["shape"]))
    header = [
        "case",
        "shape",
        "GB",
        "layer added (s)",
        "first slice (s)",
        "reopen to first slice (s)",
        "peak RSS (MB)",
        "RSS before open (MB)",
        f"< {TARGET_SECONDS:.0f} s and < {TARGET_RSS_MB:.0f} MB",
    ]
    speedup = naive["slice_s"] / lazy["slice_s"]
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    notes = [
        "Times run from the reader call (viewer created, napari warmed up) to the layer being added and to "
        "`np.asarray(layer.data[z])` at the viewer's current z; they include importing zarr/tifffile. "
        "'Reopen' repeats it in the same process (imports warm: browsing the next volume). "
        "Each case runs in a fresh subprocess; peak RSS (VmHWM) includes napari itself (~180 MB). "
        "The zarr has 128³ chunks: showing one z-plane decodes every chunk it crosses, and napari's "
        "opportunistic dask cache (on by default) keeps them, hence its RSS; the 'cache off' row shows "
        f"the reader alone. Load average during the run: {load}.",
        f"Naive read / lazy TIFF: {speedup:.1f}× the time to the first slice, "
        f"{naive['rss_mb'] / lazy['rss_mb']:.1f}× the peak RSS.",
        f"Not counted: napari's one-time unit-registry set-up on the first layer of a session "
        f"({lazy['warmup_s']:.1f} s here), paid by any first layer whatever its reader.",
    ]
    if scale != 1:
        notes.append(f"The naive read was capped at {naive_size}³ (the lazy volume is {scale:.1f}× larger).")
    body = markdown_table(header, rows) + "\n\n" + "\n\n".join(notes) + "\n"
    command = "python benchmarks/bench_open.py" + (f" --size {args.size}" if args.size != 1600 else "")
    if args.no_report:
        print(body)
    else:
        write_section("open", "Opening a large volume lazily", body, command)


if __name__ == "__main__":
    main()
