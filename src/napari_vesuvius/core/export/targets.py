"""Which ids a submission must hold: from ``test.csv`` or the test image folder, with the source shapes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from napari_vesuvius.core.volume.io import TIFF_SUFFIXES, is_zarr_path, open_volume

from ..dataset import TEST_CSV, TEST_IMAGES, ChallengeDataset, is_dataset_folder
from ..errors import DatasetError
from .validate import SubmissionError, SubmissionTarget


def _shape_of(path: Path) -> tuple[int, int, int]:
    with open_volume(path) as volume:  # reads the header only
        return tuple(int(n) for n in volume.shape)  # type: ignore[return-value]


def _image_files(folder: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        if (path.is_file() and path.suffix.lower() in TIFF_SUFFIXES) or is_zarr_path(path):
            if path.stem in found:
                raise SubmissionError(
                    path, f"two images share the id {path.stem!r} ({found[path.stem].name})"
                )
            found[path.stem] = path
    return found


def submission_targets(data: str | Path) -> list[SubmissionTarget]:
    """The ids a submission for ``data`` must hold, each with its source image and shape.

    ``data`` is a challenge dataset folder (ids of ``test.csv``, else of ``test_images/``) or a folder
    of images (``test_images/`` itself: its sibling ``test.csv`` is used when there is one). Every id
    must have its image; shapes are read from the file headers. An empty selection is an error.
    """
    root = Path(data)
    if not root.exists():
        raise SubmissionError(root, "data folder not found")
    if not root.is_dir():
        raise SubmissionError(root, "expected a challenge dataset folder or a folder of test images")
    if root.name == TEST_IMAGES and (root.parent / TEST_CSV).is_file():
        root = root.parent  # test_images/ of a dataset folder: its test.csv lists the ids
    if is_dataset_folder(root):
        try:
            dataset = ChallengeDataset.open(root)
        except DatasetError as error:
            raise SubmissionError(root, str(error)) from error
        ids, folder = dataset.test_ids, root / TEST_IMAGES
        csv_path = root / TEST_CSV if (root / TEST_CSV).is_file() else None
        images = {vid: dataset.image_path(vid) for vid in ids}
    else:
        folder, csv_path = root, None
        images = _image_files(root)
        ids = list(images)
    if not ids:
        where = csv_path if csv_path is not None else folder
        raise SubmissionError(where, "no test images found: nothing to submit (the zip would be empty)")
    targets = []
    for vid in ids:
        image = images[vid]
        if not image.exists():
            listed = f" (listed in {csv_path})" if csv_path is not None else ""
            raise SubmissionError(f"id {vid}", f"test image {image} is missing{listed}")
        targets.append(SubmissionTarget(vid, _shape_of(image), image))
    return targets


def targets_from_shapes(shapes: Mapping[str, Sequence[int]]) -> list[SubmissionTarget]:
    """Targets from an ``id -> shape`` mapping (when the masks' sources are not files)."""
    if not shapes:
        raise SubmissionError(None, "no ids to submit: the zip would be empty")
    return [SubmissionTarget(str(vid), tuple(int(n) for n in shape)) for vid, shape in shapes.items()]  # type: ignore[misc]


def mask_files(folder: str | Path) -> dict[str, Path]:
    """``id -> mask file`` for every .tif/.tiff/.zarr in ``folder`` (hidden files ignored)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SubmissionError(folder, "mask folder not found")
    files = _image_files(folder)
    if not files:
        raise SubmissionError(folder, "no mask files (.tif/.tiff/.zarr) found: the zip would be empty")
    return files
