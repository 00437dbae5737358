"""Which ids a submission must hold: from ``test.csv`` or the test image folder, with the source shapes.

:func:`submission_targets` is also *the* check that a folder really is a test set, used by ``submit``,
``export`` and the Export widget before any work: a dataset's ``train_images/`` or ``train_labels/``, a
folder of outputs (``frag160_prob.tif``, masks, labels, autosaves), float volumes (probability maps),
volumes whose middle slice holds only 0/1/2 (labels or masks) and an empty folder are refused with a
message naming the folder (or file) and what a test set is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from napari_vesuvius.core.volume.io import (
    TIFF_SUFFIXES,
    is_label_name,
    is_zarr_path,
    looks_like_labels,
    open_volume,
)

from ..dataset import TEST_CSV, TEST_IMAGES, TRAIN_IMAGES, TRAIN_LABELS, ChallengeDataset, is_dataset_folder
from ..errors import DatasetError
from ..proofread.naming import is_derived_name
from .validate import SubmissionError, SubmissionTarget

#: what every refusal says a test set is
EXPECTED = (
    "expected a challenge dataset folder (test.csv + test_images/) or a folder of test CT images "
    "(<id>.tif / <id>.zarr)"
)
#: words in a file name that mark an output of this plugin (probability, prediction, submission), never a CT
OUTPUT_NAME_WORDS = ("prob", "pred", "submission")


def _not_a_test_image_name(path: Path) -> bool:
    """A probability / prediction output, a label or mask, a corrected version or an autosave, by name."""
    name = path.name.lower()
    return (
        is_derived_name(path.name) or is_label_name(path) or any(word in name for word in OUTPUT_NAME_WORDS)
    )


def _refuse_non_test_folder(root: Path) -> None:
    """A dataset's train folders (or any other sub-folder of a dataset but test_images/) are no test set."""
    parent = root.parent
    if root.name in (TRAIN_IMAGES, TRAIN_LABELS) or (root.name != TEST_IMAGES and is_dataset_folder(parent)):
        where = f"the {root.name}/ folder of the dataset {parent}" if is_dataset_folder(parent) else root.name
        raise SubmissionError(
            root, f"is {where}, not a test set; choose the dataset folder or its {TEST_IMAGES}/ ({EXPECTED})"
        )


def _check_test_image(path: Path, volume: object) -> None:
    """Refuse a probability map (float values) or a label / mask volume (only 0, 1, 2 in its middle slice)."""
    dtype = np.dtype(volume.dtype)  # type: ignore[attr-defined]
    if np.issubdtype(dtype, np.floating):
        raise SubmissionError(
            path, f"holds {dtype} values (a probability map?), not a test CT scan; {EXPECTED}"
        )
    if looks_like_labels(volume.data):  # type: ignore[attr-defined]
        raise SubmissionError(
            path, f"its middle slice holds only the values 0, 1, 2: a label or mask volume, not a test CT "
            f"scan; {EXPECTED}",
        )  # fmt: skip


def _shape_of(path: Path) -> tuple[int, int, int]:
    """The shape of a test image (from its header), after checking it is a CT scan (one middle slice read)."""
    with open_volume(path) as volume:
        _check_test_image(path, volume)
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
    must have its image; shapes are read from the file headers. Anything that is not a test set (see
    the module docstring) raises :class:`SubmissionError` naming the folder or file and what was expected.
    """
    root = Path(data)
    if not root.exists():
        raise SubmissionError(root, f"data folder not found; {EXPECTED}")
    if not root.is_dir():
        raise SubmissionError(root, f"is a file, not a folder; {EXPECTED}")
    if root.name == TEST_IMAGES and (root.parent / TEST_CSV).is_file():
        root = root.parent  # test_images/ of a dataset folder: its test.csv lists the ids
    if is_dataset_folder(root):
        try:
            dataset = ChallengeDataset.open(root)
        except DatasetError as error:
            raise SubmissionError(root, str(error)) from error
        ids = dataset.test_ids
        csv_path = root / TEST_CSV if (root / TEST_CSV).is_file() else None
        images = {vid: dataset.image_path(vid) for vid in ids}
        if not ids:
            raise SubmissionError(
                csv_path or root,
                f"no test ids (no test images listed or found): nothing to submit; {EXPECTED}",
            )
    else:
        _refuse_non_test_folder(root)
        csv_path = None
        images = _image_files(root)
        ids = list(images)
        if not ids:
            raise SubmissionError(
                root, f"no test images found: nothing to submit (no .tif/.tiff/.zarr in it); {EXPECTED}"
            )
        odd = [path.name for path in images.values() if _not_a_test_image_name(path)]
        if odd:
            shown = ", ".join(odd[:5]) + (f" ... ({len(odd)} in all)" if len(odd) > 5 else "")
            raise SubmissionError(
                root, f"holds files that are not test CT images ({shown}: outputs, labels or masks by "
                f"their names); {EXPECTED}",
            )  # fmt: skip
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
