"""Validated ``submission.zip`` export (see :mod:`.writer`); Qt-free, usable offline from the core alone."""

from .targets import mask_files, submission_targets, targets_from_shapes
from .validate import (
    LZW_TAG,
    SubmissionError,
    SubmissionTarget,
    as_submission_mask,
    check_binary,
    decode_mask_tif,
    encode_mask_tif,
)
from .writer import (
    ExportSummary,
    SubmissionWriter,
    VolumeSummary,
    export_submission,
    iter_export_submission,
    read_submission,
)

__all__ = [
    "LZW_TAG",
    "ExportSummary",
    "SubmissionError",
    "SubmissionTarget",
    "SubmissionWriter",
    "VolumeSummary",
    "as_submission_mask",
    "check_binary",
    "decode_mask_tif",
    "encode_mask_tif",
    "export_submission",
    "iter_export_submission",
    "mask_files",
    "read_submission",
    "submission_targets",
    "targets_from_shapes",
]
