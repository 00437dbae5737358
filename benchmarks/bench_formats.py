"""Benchmark: what the ecosystem formats cost, next to the reference tools in the same run.

* Writing a 320³ float16 prediction: plain zarr v2 / v3, OME-Zarr 0.4 / 0.5 with its mean pyramid, LZW TIFF
  with ImageJ tags (ours), against ome-zarr-py's ``write_image`` (NGFF 0.4, same levels).
* Opening a folder of 2D TIFF slices as one volume (every slice header checked) against reading the slice
  headers with tifffile, and reading a 64-slice slab through both.
* Reading a remote OME-Zarr over loopback HTTP: ours clean, with injected 429/503 bursts, and with the chunk
  cache warm; zarr-python's own ``FsspecStore`` (no retries) on the clean server as the reference.

    python benchmarks/bench_formats.py            # 320³, 1000 slices of 512²: about a minute
    python benchmarks/bench_formats.py --size 160 --slices 200   # quick run
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from _report import markdown_table, write_section


def best_of(runs: int, action: Callable[[int], object]) -> float:
    """The fastest of ``runs`` calls of ``action(run)`` in seconds (shared, noisy machine)."""
    times = []
    for run in range(runs):
        started = time.perf_counter()
        action(run)
        times.append(time.perf_counter() - started)
    return min(times)


def writes(root: Path, size: int) -> list[list[object]]:
    import zarr
    from ome_zarr.format import FormatV04
    from ome_zarr.writer import write_image

    from napari_vesuvius.core.volume.ngff import validate_ome_zarr
    from napari_vesuvius.core.volume.spatial import Spatial
    from napari_vesuvius.core.volume.write import write_volume

    rng = np.random.default_rng(0)
    probability = rng.random((size, size, size), dtype=np.float32).astype(np.float16)
    placed = Spatial((7.91, 7.91, 7.91), unit="micrometer")
    cases = [
        ("zarr format 2 (default)", ".zarr", {}),
        ("zarr format 3", ".zarr", {"zarr_format": 3}),
        ("OME-Zarr 0.4 on v2, mean pyramid", ".ome.zarr", {}),
        ("OME-Zarr 0.5 on v3, mean pyramid", ".ome.zarr", {"zarr_format": 3}),
        ("TIFF, LZW, scale in tags", ".tif", {}),
    ]
    rows = []
    for label, suffix, kwargs in cases:

        def ours(run: int, suffix: str = suffix, kwargs: dict = kwargs) -> None:
            write_volume(root / f"w{run}{suffix}", probability, spatial=placed, **kwargs)

        seconds = best_of(2, ours)
        written = root / f"w0{suffix}"
        if suffix == ".ome.zarr":
            validate_ome_zarr(written)
        rows.append([f"ours: {label}", f"{seconds:.2f}", f"{_megabytes(written):.0f}"])
    ours_ome = float(rows[2][1])

    def reference(run: int) -> None:
        group = zarr.open_group(str(root / f"r{run}.ome.zarr"), mode="w", zarr_format=2)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            write_image(
                probability, group, axes="zyx", fmt=FormatV04(), scale_factors=(2, 4),
                scale={"z": 7.91, "y": 7.91, "x": 7.91}, storage_options={"chunks": (128, 128, 128)},
            )  # fmt: skip

    seconds = best_of(2, reference)
    rows.append(["ome-zarr-py `write_image` (0.4 on v2, 3 levels)", f"{seconds:.2f}", ""])
    rows.append(["ratio ours / ome-zarr-py (OME-Zarr 0.4)", f"{ours_ome / seconds:.2f}×", ""])
    return rows


def _megabytes(path: Path) -> float:
    if path.is_file():
        return path.stat().st_size / 1e6
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6


def slice_folder(root: Path, slices: int, side: int) -> list[list[object]]:
    import tifffile

    from napari_vesuvius.core.volume.io import open_volume

    folder = root / "slices"
    folder.mkdir()
    plane = np.random.default_rng(1).integers(0, 65535, (side, side), dtype=np.uint16)
    for index in range(slices):
        tifffile.imwrite(folder / f"{index:05d}.tif", plane)
    files = sorted(folder.glob("*.tif"))

    def ours(_: int) -> None:
        with open_volume(folder) as volume:
            assert volume.shape == (slices, side, side)

    def tifffile_headers(_: int) -> None:
        for file in files:
            with tifffile.TiffFile(file) as tif:
                assert tif.pages[0].shape == (side, side)

    depth = min(64, slices)

    def ours_slab(_: int) -> None:
        with open_volume(folder) as volume:
            np.asarray(volume.data[:depth])

    def tifffile_slab(_: int) -> None:
        np.stack([tifffile.imread(file) for file in files[:depth]])

    opened, headers = best_of(3, ours), best_of(3, tifffile_headers)
    slab, reference = best_of(3, ours_slab), best_of(3, tifffile_slab)
    return [
        [f"open {slices} slices of {side}² (every header checked): ours", f"{opened:.3f}"],
        ["same headers read with `tifffile.TiffFile`", f"{headers:.3f}"],
        ["ratio tifffile / ours", f"{headers / opened:.1f}×"],
        [f"read {depth} slices (open + read): ours", f"{slab:.3f}"],
        [f"`tifffile.imread` of the same {depth} files", f"{reference:.3f}"],
    ]


def remote(root: Path, size: int) -> list[list[object]]:
    import zarr
    from zarr.storage import FsspecStore

    from http_server import FaultServer, status
    from napari_vesuvius.core.volume.io import open_volume
    from napari_vesuvius.core.volume.remote import RemoteOptions, RetryPolicy
    from napari_vesuvius.core.volume.write import write_volume

    data = np.random.default_rng(2).integers(0, 255, (size, size, size), dtype=np.uint8)
    write_volume(root / "scan.ome.zarr", data, chunks=(64, 64, 64))
    policy = RetryPolicy(base_delay_s=0.05, max_delay_s=0.5)
    rows = []
    with FaultServer(root) as server:
        url = f"{server.url}/scan.ome.zarr"

        def read(options: RemoteOptions) -> dict:
            with open_volume(url, remote=options) as volume:
                assert np.array_equal(np.asarray(volume.data), data)
                return volume.remote.to_dict()

        def reference(_: int) -> None:
            store = FsspecStore.from_url(f"{url}/0", read_only=True)
            assert np.array_equal(zarr.open_array(store=store, mode="r")[:], data)

        plain, cached = RemoteOptions(retry=policy), RemoteOptions(retry=policy, cache_dir=root / "cache")
        bursts = [status(429)] * 10 + [status(503)] * 5
        cases: list[tuple[str, list, RemoteOptions]] = [
            ("clean server", [], plain),
            ("10× 429 + 5× 503 injected", bursts, plain),
            ("chunk cache warm", [], cached),
        ]
        read(RemoteOptions(retry=policy, cache_dir=root / "cache"))  # fill the cache once
        for label, faults, options in cases:
            server.reset_counts()
            server.inject(None, *faults)
            started = time.perf_counter()
            stats = read(options)
            seconds = time.perf_counter() - started
            rows.append(
                [f"ours: {label}", f"{seconds:.3f}", server.count(), stats["retries"], stats["cache_hits"]]
            )
        server.reset_counts()
        seconds = best_of(1, reference)
        rows.append(
            ["zarr `FsspecStore` (no retries), clean server", f"{seconds:.3f}", server.count(), "—", "—"]
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=320, help="edge of the written volume (default 320)")
    parser.add_argument("--slices", type=int, default=1000, help="slices in the TIFF folder (default 1000)")
    parser.add_argument("--side", type=int, default=512, help="slice edge in the TIFF folder (default 512)")
    parser.add_argument(
        "--remote-size", type=int, default=128, help="edge of the served volume (default 128)"
    )
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-formats-"))
    try:
        write_rows = writes(root, args.size)
        folder_rows = slice_folder(root, args.slices, args.side)
        remote_rows = remote(root, args.remote_size)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    import os

    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    body = "\n".join(
        [
            f"Writing a {args.size}³ float16 prediction (best of 2; 7.91 µm placement carried):\n",
            markdown_table(["writer", "seconds", "MB on disk"], write_rows),
            "",
            "A folder of 2D uint16 TIFF slices opened as one volume (best of 3):\n",
            markdown_table(["case", "seconds"], folder_rows),
            "",
            f"A {args.remote_size}³ uint8 OME-Zarr (64³ chunks) read whole over loopback HTTP (retry waits "
            "0.05–0.5 s here; the default policy waits up to 30 s):\n",
            markdown_table(["case", "seconds", "HTTP requests", "retries", "cache hits"], remote_rows),
            "",
            f"Load average at the end: {load} on 2 cores.",
        ]
    )
    command = "python benchmarks/bench_formats.py" + (
        ""
        if (args.size, args.slices, args.side) == (320, 1000, 512)
        else f" --size {args.size} --slices {args.slices}"
    )
    write_section("formats", "Ecosystem formats: writing, slice folders, remote reads", body, command)


if __name__ == "__main__":
    main()
