"""One model's sliding window over a volume, processed in z-rows of tiles with a rolling accumulator.

Tiles sharing a z start form a row. After the row at ``z_i`` has been blended, no later tile touches
``z < z_{i+1}``, so that part is final: it is turned into probabilities and handed to the engine,
and the accumulator (``patch_z × Y × X``) rolls forward. Memory is bounded by one row, not the volume.

Per tile the network logits are averaged over the networks (folds) and the mirrored variants, weighted
with the Gaussian and added to the accumulator together with the weights; a final division and
softmax give the probabilities (for two classes: ``sigmoid(l_surface - l_other)``, the same value,
with half the memory). Tiles whose raw voxels are all 0 are skipped: they add neither logits nor
weight, and every voxel they cover is air, which the runner sets to 0 anyway, so skipping never changes
the output. Constant non-zero tiles are computed once per value and reused.

On CPU the tiles of a batch run side by side, one single-threaded forward per core, instead of one
forward spread over all cores: PyTorch's intra-op parallelism of these small-channel 3D convolutions
scales poorly on CPU, so this is faster (docs/benchmarks.md); slow layers are also swapped for
faster, fused equivalents (``_cpu_network.py``). Both give the same probabilities up to float rounding.
On CUDA the next row's slab is read and normalised in a background thread while the GPU runs the
current row, and batches go through pinned memory (``device.GpuTuning``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_vesuvius.core.errors import VesuviusError, VolumeError
from napari_vesuvius.core.progress import Progress

from . import device as devices
from ._tiling import gaussian_weights, mirror_combinations, padded_shape, tile_grid
from .model_api import InferenceModel


@lru_cache(maxsize=1)
def _reader() -> ThreadPoolExecutor:
    """The one background thread that prefetches slabs (reads are sequential per runner anyway)."""
    return ThreadPoolExecutor(1, thread_name_prefix="slab-prefetch")


class ModelRunner:
    """Runs one :class:`InferenceModel` row by row; see the module docstring."""

    def __init__(
        self,
        volume: Any,
        model: InferenceModel,
        *,
        step: float,
        gaussian: bool,
        tta_axes: tuple[int, ...],
        batch_size: int,
        device: torch.device,
        precision: str,
        skip_air: bool,
        grid: Sequence[Sequence[int]] | None = None,
        check: Callable[[np.ndarray, int], None] | None = None,
        source: str | Path | None = None,
        tuning: devices.GpuTuning | None = None,
    ) -> None:
        # ``grid``: tile starts per axis in padded coordinates (default: the nnU-Net grid of ``volume``).
        # The block runner (``blocks.py``) passes the part of a larger volume's grid that covers a block.
        # ``check(raw, z0)`` validates every slab read (``intensity.VoxelCheck``: NaN/Inf, value range);
        # ``source`` names the volume's file in errors; ``tuning``: how a CUDA run feeds the network.
        self.volume = volume
        self.model = model
        self.shape = tuple(int(s) for s in volume.shape)
        self.patch = tuple(int(p) for p in model.patch_size)
        self.full, self.before = padded_shape(self.shape, self.patch)
        zs, ys, xs = (list(a) for a in grid) if grid is not None else tile_grid(self.full, self.patch, step)
        self.rows = zs
        self.yx = [(y, x) for y in ys for x in xs]
        self.tiles_total = len(zs) * len(self.yx)
        self.device = device
        self.precision = precision
        self.batch_size = max(1, int(batch_size))
        self.skip_air = skip_air
        self.check = check
        try:
            self.normalization = model.normalization.fit(volume)
        except VolumeError as error:  # statistics of a volume holding NaN: name the file we know
            if error.path is not None or source is None:
                raise
            raise VolumeError(source, error.problem) from error
        except ValueError as error:
            raise VolumeError(source, f"cannot normalise the volume: {error}") from error
        self.mirror = [tuple(a + 2 for a in combo) for combo in mirror_combinations(tta_axes)]
        self.tuning = tuning if tuning is not None else devices.GpuTuning()
        self.networks = devices.prepare_networks(list(model.networks), device, self.tuning)
        self.cpu_workers = 1
        if device.type == "cpu":
            from ._cpu_network import accelerate_for_cpu

            self.networks = [accelerate_for_cpu(net) for net in self.networks]
            self.cpu_workers = max(1, min(torch.get_num_threads(), self.batch_size))
        self.channels = 1 if model.num_classes == 2 else model.num_classes
        weights = gaussian_weights(self.patch) if gaussian else np.ones(self.patch, np.float32)
        self.weights = torch.from_numpy(np.array(weights)).to(device)
        pz = self.patch[0]
        self.acc = torch.zeros((self.channels, pz, self.full[1], self.full[2]), device=device)
        self.wsum = torch.zeros((pz, self.full[1], self.full[2]), device=device)
        self.acc_z = 0  # padded z of accumulator row 0
        self.constant_cache: dict[float, torch.Tensor] = {}
        self.tiles_run = 0
        self.tiles_skipped = 0
        self.forward_s = 0.0
        self.front = 0  # original-volume z below which this model's probabilities were handed out
        self._raw_row: np.ndarray | None = None  # raw voxels of the row being blended (previews)
        # CUDA: the next row's slab, read in a background thread while the GPU runs this row
        self._prefetch = self.tuning.prefetch and device.type in devices.PREFETCH_DEVICES
        self._next_row: tuple[int, Future] | None = None

    # ----------------------------------------------------------------------------------- reading
    def _take_row(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Row ``index``'s slab (prefetched where it was), and start reading the next one if prefetching."""
        z0 = self.rows[index]
        pending, self._next_row = self._next_row, None
        slab = pending[1].result() if pending is not None and pending[0] == z0 else self._read_row(z0)
        if self._prefetch and index + 1 < len(self.rows):
            following = self.rows[index + 1]
            self._next_row = (following, _reader().submit(self._read_row, following))
        return slab

    def _read_row(self, z0: int) -> tuple[np.ndarray, np.ndarray]:
        """Raw and normalised voxels of the padded slab ``[z0, z0 + patch_z)``."""
        pz = self.patch[0]
        bz, by, bx = self.before
        a, b = max(z0 - bz, 0), min(z0 + pz - bz, self.shape[0])
        raw = np.asarray(self.volume[a:b])
        if self.check is not None:
            self.check(raw, a)
        norm = self.normalization.apply(raw)
        if raw.shape == (pz, self.full[1], self.full[2]):
            return raw, norm
        raw_p = np.zeros((pz, self.full[1], self.full[2]), dtype=raw.dtype)
        norm_p = np.zeros(raw_p.shape, dtype=np.float32)
        rows = slice(a + bz - z0, b + bz - z0)
        where = (rows, slice(by, by + self.shape[1]), slice(bx, bx + self.shape[2]))
        raw_p[where] = raw
        norm_p[where] = norm
        return raw_p, norm_p

    # ----------------------------------------------------------------------------------- forward
    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        """Blend-ready logits ``(B, channels, *patch)``: mean over networks and mirrored variants."""
        total: torch.Tensor | None = None
        with torch.inference_mode(), devices.autocast(self.device, self.precision):
            for network in self.networks:
                for axes in self.mirror:
                    x = torch.flip(batch, axes) if axes else batch
                    out = network(x)
                    if isinstance(out, list | tuple):
                        out = out[0]
                    out = torch.flip(out, axes) if axes else out
                    out = out.float()
                    total = out if total is None else total.add_(out)
            assert total is not None
            total = total.div_(len(self.networks) * len(self.mirror))
            if self.channels == 1:
                sc = self.model.surface_class
                total = (total[:, sc] - total[:, 1 - sc]).unsqueeze(1)
        return total.clone()

    def _forward_side_by_side(self, tiles: np.ndarray) -> torch.Tensor:
        """CPU: split the batch over ``cpu_workers`` threads, each running single-threaded."""
        parts = np.array_split(tiles, min(self.cpu_workers, len(tiles)))

        def run(part: np.ndarray) -> torch.Tensor:
            return self._forward(torch.from_numpy(part).unsqueeze(1))

        # torch.set_num_threads is per thread for worker threads (OpenMP): the caller keeps its own.
        with ThreadPoolExecutor(len(parts), initializer=torch.set_num_threads, initargs=(1,)) as pool:
            return torch.cat(list(pool.map(run, parts)))

    def _forward_once(self, tiles: np.ndarray) -> torch.Tensor:
        if self.device.type == "cpu" and self.cpu_workers > 1 and len(tiles) > 1:
            return self._forward_side_by_side(tiles)
        batch = torch.from_numpy(tiles).unsqueeze(1)
        if self.device.type == "cuda":
            batch = batch.pin_memory().to(self.device, non_blocking=True)
            if self.tuning.channels_last:
                batch = batch.contiguous(memory_format=torch.channels_last_3d)
        else:
            batch = batch.to(self.device)
        return self._forward(batch)

    def _forward_with_retry(self, tiles: np.ndarray) -> torch.Tensor:
        """Forward a batch; on GPU out-of-memory halve the batch size and retry, down to 1.

        ``forward_s`` counts every attempt once: the failed one here, the halves in their own calls.
        """
        start = time.perf_counter()
        try:
            logits = self._forward_once(tiles)
        except Exception as error:
            self.forward_s += time.perf_counter() - start
            if not devices.is_out_of_memory(error):
                raise
            devices.empty_cache(self.device)
            if len(tiles) == 1:
                raise VesuviusError(
                    f"out of {self.device.type.upper()} memory with one tile of {self.patch} "
                    f"({self.model.name or 'model'}); use a smaller patch or --device cpu"
                ) from None
            half = len(tiles) // 2
            self.batch_size = max(1, half)
            return torch.cat([self._forward_with_retry(tiles[:half]), self._forward_with_retry(tiles[half:])])
        self.forward_s += time.perf_counter() - start
        return logits

    # ---------------------------------------------------------------------------------- blending
    def _blend(self, logits: torch.Tensor, yx: list[tuple[int, int]]) -> None:
        py, px = self.patch[1], self.patch[2]
        for tile_logits, (y, x) in zip(logits, yx, strict=True):
            self.acc[:, :, y : y + py, x : x + px].addcmul_(tile_logits, self.weights)
            self.wsum[:, y : y + py, x : x + px].add_(self.weights)

    def _finalize(self, z_end: int) -> tuple[int, int, np.ndarray] | None:
        """Probabilities of padded z ``[acc_z, z_end)``, cropped to the volume, as float32 numpy."""
        rows = z_end - self.acc_z
        bz, by, bx = self.before
        a, b = max(self.acc_z, bz), min(z_end, bz + self.shape[0])
        if rows <= 0 or a >= b:
            return None
        zs = slice(a - self.acc_z, b - self.acc_z)
        sl = (zs, slice(by, by + self.shape[1]), slice(bx, bx + self.shape[2]))
        w = self.wsum[sl]
        covered = w > 0
        logits = self.acc[(slice(None), *sl)] / w.clamp_min(1e-30)
        if self.channels == 1:
            prob = torch.sigmoid(logits[0])
        else:
            prob = torch.softmax(logits, dim=0)[self.model.surface_class]
        prob = torch.where(covered, prob, torch.zeros((), device=prob.device))
        return a - bz, b - bz, prob.cpu().numpy()

    def provisional(self) -> tuple[int, int, np.ndarray] | None:
        """A preview of the row being blended: the probabilities of the tiles blended so far.

        Covers the accumulator (``[acc_z, acc_z + patch_z)`` padded, cropped to the volume), with air
        set to 0 and voxels no tile has reached yet 0. Every voxel of it is finalised later (by this
        row or the next ones), so writing the preview into an output never changes the final result.
        Read-only: the accumulator is not modified.
        """
        if self._raw_row is None:
            return None
        result = self._finalize(min(self.acc_z + self.patch[0], self.full[0]))
        if result is not None:
            self._zero_air(result, self._raw_row, self.acc_z)
        return result

    def _zero_air(self, result: tuple[int, int, np.ndarray], raw: np.ndarray, z0: int) -> None:
        """Set the probability outside the scanned region (``ct == 0``) to 0, in place.

        The finished slab lies inside the padded raw slab this row read (rows start where the last
        one's finished z ended), so the volume is not read again; otherwise read the slab.
        """
        a, b, prob = result
        bz, by, bx = self.before
        lo, hi = a + bz - z0, b + bz - z0  # rows of the padded raw slab
        if lo >= 0 and hi <= raw.shape[0]:
            scanned = raw[lo:hi, by : by + self.shape[1], bx : bx + self.shape[2]]
        else:  # pragma: no cover - a custom grid whose rows skip z
            scanned = np.asarray(self.volume[a:b])
        prob[scanned == 0] = 0.0

    def _roll(self, new_z: int) -> None:
        """Move the accumulator so its row 0 is padded z ``new_z`` (rows before it were finalized)."""
        shift = new_z - self.acc_z
        pz = self.patch[0]
        if shift >= pz:
            self.acc.zero_()
            self.wsum.zero_()
        elif shift > 0:
            keep = pz - shift
            self.acc[:, :keep] = self.acc[:, shift:].clone()
            self.wsum[:keep] = self.wsum[shift:].clone()
            self.acc[:, keep:] = 0
            self.wsum[keep:] = 0
        self.acc_z = new_z

    # --------------------------------------------------------------------------------------- run
    def run_row(
        self, index: int, done_before: int, total: int
    ) -> Generator[Progress, None, tuple[int, int, np.ndarray] | None]:
        """Blend row ``index``; yield after each batch; return the newly final probabilities."""
        z0 = self.rows[index]
        py, px = self.patch[1], self.patch[2]
        raw, norm = self._take_row(index)
        self._raw_row = raw
        pending: list[tuple[np.ndarray, tuple[int, int], float | None]] = []
        done = done_before

        def flush() -> None:
            tiles = np.stack([p[0] for p in pending])
            logits = self._forward_with_retry(tiles)
            self.tiles_run += len(pending)
            for i, (_, _, const) in enumerate(pending):
                if const is not None and const not in self.constant_cache:
                    self.constant_cache[const] = logits[i : i + 1].clone()
            self._blend(logits, [p[1] for p in pending])
            pending.clear()

        name = self.model.name or "model"
        reported = -1
        for y, x in self.yx:
            done += 1
            const: float | None = None
            if self.skip_air:
                tile_raw = raw[:, y : y + py, x : x + px]
                if not tile_raw.any():
                    self.tiles_skipped += 1
                    continue
                low, high = tile_raw.min(), tile_raw.max()
                if low == high:
                    const = float(low)
                    if const in self.constant_cache:
                        self._blend(self.constant_cache[const], [(y, x)])
                        self.tiles_skipped += 1
                        continue
            pending.append((norm[:, y : y + py, x : x + px], (y, x), const))
            if len(pending) >= self.batch_size:
                flush()
                reported = done
                yield Progress(done, total, f"{name}: tiles z={z0}")
        if pending:
            flush()
        if done != reported:
            yield Progress(done, total, f"{name}: tiles z={z0}")
        last = index == len(self.rows) - 1
        z_end = self.full[0] if last else self.rows[index + 1]
        result = self._finalize(z_end)
        if result is not None:
            self._zero_air(result, raw, z0)
        if not last:
            self._roll(z_end)
        self.front = self.shape[0] if last else max(0, min(self.shape[0], z_end - self.before[0]))
        return result
