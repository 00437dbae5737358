"""Time training augmentation per patch: ours (numpy/scipy) against nnU-Net v2's batchgeneratorsv2 pipeline.

Run: ``python benchmarks/bench_augment.py [--patches 32 128] [--samples 40] [--no-write]``

Both pipelines run single-threaded (``torch.set_num_threads(1)``, BLAS/OpenMP pinned to one thread)
on the same float32 crop of nnU-Net's initial patch size (the patch grown for ±30° rotations and
scale 0.85, as ``nnUNetTrainer`` computes it) with a 0/1 label, and return one patch. The
batchgeneratorsv2 pipeline is ``nnUNetTrainer.get_training_transforms`` itself (3D, mirroring on
every axis, no deep supervision), fed as nnU-Net's data loader feeds it (float32 image, int16
segmentation). Ours runs the sampler's steps (rotation/scaling while cropping, mirroring and 90°
rotations, intensity augmentations) with two settings: :meth:`AugmentConfig.nnunet` (nnU-Net's
probabilities and ranges) and the defaults (stronger: more transforms fire). A second table times
each transform alone (applied with probability 1) in both implementations.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import replace  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from napari_vesuvius.core.training import augment as aug  # noqa: E402
from napari_vesuvius.core.training.config import AugmentConfig  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
ROTATION = math.radians(30.0)


def initial_patch(patch: int) -> tuple[int, int, int]:
    """nnU-Net's larger crop that the spatial transform cuts the patch from."""
    from nnunetv2.training.data_augmentation.compute_initial_patch_size import get_patch_size

    size = get_patch_size(
        (patch,) * 3, (-ROTATION, ROTATION), (-ROTATION, ROTATION), (-ROTATION, ROTATION), (0.85, 1.25)
    )
    return tuple(int(s) for s in size)


def make_crop(shape: tuple[int, ...], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Smooth random image in z-score units and a thresholded label, as a normalised training crop."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    image = ndimage.gaussian_filter(rng.normal(size=shape).astype(np.float32), 2.0)
    image = (image - image.mean()) / image.std()
    return image.astype(np.float32), (image > 0.8).astype(np.uint8)


def ours(patch: int, cfg: AugmentConfig) -> Callable[[np.ndarray, np.ndarray, np.random.Generator], object]:
    """The sampler's augmentation steps on a crop already in memory."""
    size = (patch,) * 3

    def run(image: np.ndarray, label: np.ndarray, rng: np.random.Generator) -> object:
        centre = (np.asarray(image.shape) - 1) / 2
        matrix = aug.sample_spatial(rng, cfg)
        if matrix is not None:
            img, lab = aug.warp_patch(image, label, matrix, centre, size)
        else:
            start = [(s - patch) // 2 for s in image.shape]
            box = tuple(slice(a, a + patch) for a in start)
            img, lab = image[box], label[box]
        img, lab = aug.mirror_rotate(img, lab, rng, cfg)
        return aug.augment_intensity(img, rng, cfg), lab

    return run


def nnunet(patch: int) -> Callable[[np.ndarray, np.ndarray, np.random.Generator], object]:
    """nnU-Net v2's default training transforms, built by nnUNetTrainer from batchgeneratorsv2."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    transforms = nnUNetTrainer.get_training_transforms(
        (patch,) * 3, (-ROTATION, ROTATION), None, (0, 1, 2), False
    )

    warm_up_blur(transforms, patch)

    def run(image: np.ndarray, label: np.ndarray, rng: np.random.Generator) -> object:
        data = {
            "image": torch.from_numpy(image[None]).float(),
            "segmentation": torch.from_numpy(label[None]).to(torch.int16),
        }
        return transforms(**data)

    return run


def warm_up_blur(transform: object, patch: int, calls: int = 30) -> None:
    """Let batchgeneratorsv2's blur finish its FFT-or-not timing runs (9 per size and kernel) first.

    In a long training those runs are paid once; left in, they would dominate the first patches.
    """
    from batchgeneratorsv2.transforms.noise.gaussian_blur import GaussianBlurTransform

    stack = [transform]
    while stack:
        item = stack.pop()
        if isinstance(item, GaussianBlurTransform):
            for _ in range(calls):
                item(image=torch.zeros((1, patch, patch, patch)))
        stack.extend(getattr(item, "transforms", []))
        if hasattr(item, "transform"):
            stack.append(item.transform)


def per_patch_ms(run: Callable, image: np.ndarray, label: np.ndarray, samples: int, seed: int = 0) -> float:
    """Mean CPU milliseconds per patch over ``samples`` calls (after one warm-up call)."""
    rng = np.random.default_rng(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    run(image, label, rng)
    start = time.process_time()
    for _ in range(samples):
        run(image, label, rng)
    return (time.process_time() - start) / samples * 1000


def single_transforms() -> list[tuple[str, Callable[[np.ndarray], object], Any]]:
    """Each intensity transform alone: (name, ours on a patch, the batchgeneratorsv2 transform)."""
    from batchgeneratorsv2.transforms.intensity.brightness import MultiplicativeBrightnessTransform
    from batchgeneratorsv2.transforms.intensity.contrast import BGContrast, ContrastTransform
    from batchgeneratorsv2.transforms.intensity.gamma import GammaTransform
    from batchgeneratorsv2.transforms.intensity.gaussian_noise import GaussianNoiseTransform
    from batchgeneratorsv2.transforms.noise.gaussian_blur import GaussianBlurTransform
    from batchgeneratorsv2.transforms.spatial.low_resolution import SimulateLowResolutionTransform

    rng = np.random.default_rng(1)
    only = {f"p_{name}": 0.0 for name in ("noise", "blur", "brightness", "shift", "contrast", "gamma")}
    only |= {"p_invert_gamma": 0.0, "p_low_resolution": 0.0}
    base = replace(AugmentConfig.nnunet(), **only)

    def ours_only(field: str) -> Callable[[np.ndarray], object]:
        cfg = replace(base, **{field: 1.0})
        return lambda img: aug.augment_intensity(img, rng, cfg)

    gamma_range, contrast = BGContrast((0.7, 1.5)), BGContrast((0.75, 1.25))
    theirs = {
        "Gaussian noise": GaussianNoiseTransform((0, 0.1), 1, True),
        "Gaussian blur (sigma per axis)": GaussianBlurTransform((0.5, 1.0), False, False, 1, benchmark=True),
        "brightness ×": MultiplicativeBrightnessTransform(contrast, False, 1),
        "contrast": ContrastTransform(contrast, True, False, 1),
        "low resolution": SimulateLowResolutionTransform((0.5, 1), False, True, None, None, 1),
        "inverted gamma": GammaTransform(gamma_range, 1, False, 1, 1),
        "gamma": GammaTransform(gamma_range, 0, False, 1, 1),
    }
    fields = (
        "p_noise",
        "p_blur",
        "p_brightness",
        "p_contrast",
        "p_low_resolution",
        "p_invert_gamma",
        "p_gamma",
    )
    return [(name, ours_only(f), t) for (name, t), f in zip(theirs.items(), fields, strict=True)]


def time_call(call: Callable[[], object], repeats: int) -> float:
    call()
    start = time.process_time()
    for _ in range(repeats):
        call()
    return (time.process_time() - start) / repeats * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patches", type=int, nargs="+", default=[32, 128], help="patch edge lengths")
    parser.add_argument("--samples", type=int, default=40, help="patches timed per pipeline and size")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from benchmarks._report import markdown_table, write_section

    torch.set_num_threads(1)
    started, wall = time.process_time(), time.perf_counter()
    rows, transform_rows = [], []
    for patch in args.patches:
        image, label = make_crop(initial_patch(patch))
        samples = max(5, args.samples if patch <= 64 else args.samples // 2)
        reference = per_patch_ms(nnunet(patch), image, label, samples)
        for name, cfg in (
            ("ours, nnU-Net settings", AugmentConfig.nnunet()),
            ("ours, defaults", AugmentConfig()),
        ):
            mine = per_patch_ms(ours(patch, cfg), image, label, samples)
            rows.append([f"{patch}³", name, mine, reference, reference / mine])
        cube = np.ascontiguousarray(image[tuple(slice(0, patch) for _ in range(3))])
        repeats = max(3, samples // 2)
        for name, mine, theirs in single_transforms():
            warm_up_blur(theirs, patch)
            ours_ms = time_call(lambda m=mine, c=cube: m(c.copy()), repeats)
            bg_ms = time_call(lambda t=theirs, c=cube: t(image=torch.from_numpy(c.copy())[None]), repeats)
            transform_rows.append([f"{patch}³", name, ours_ms, bg_ms, bg_ms / ours_ms])
        print(f"{patch}³ done after {time.perf_counter() - wall:.0f} s", flush=True)
    header = ["patch", "pipeline", "ours ms/patch", "nnU-Net (bgv2) ms/patch", "bgv2 / ours"]
    body = (
        "CPU time per augmented patch (single-threaded, so on an idle machine the wall time), from a crop "
        "of nnU-Net's initial patch size held in memory (loading excluded). nnU-Net: "
        "`nnUNetTrainer.get_training_transforms` (batchgeneratorsv2 0.3.6, torch CPU). Ours with "
        "`AugmentConfig.nnunet()` fires the same transforms as often; with the "
        "defaults more of them fire (see `AugmentConfig`). A ratio above 1 means ours is faster.\n\n"
        + markdown_table(header, rows)
        + "\n\nEach intensity transform alone (applied every time), same patch:\n\n"
        + markdown_table(["patch", "transform", "ours ms", "bgv2 ms", "bgv2 / ours"], transform_rows)
        + f"\n\nTotal {time.process_time() - started:.0f} s CPU, {time.perf_counter() - wall:.0f} s wall."
    )
    command = "python benchmarks/bench_augment.py"
    if args.no_write:
        print(body)
    else:
        write_section(
            "augment", "Training augmentation: ours vs nnU-Net v2 (batchgeneratorsv2)", body, command
        )


if __name__ == "__main__":
    main()
