"""Validated ``submission.zip`` export; Qt-free, usable offline from the core alone.

* :mod:`.targets`: which test ids a submission needs and where their masks are (and the check that a
  folder really is a test set);
* :mod:`.replace`: the ids an existing zip holds, and the question before replacing a different set;
* :mod:`.validate`: the submission rules (shape, dtype, values, LZW TIFF) and the mask encoding;
* :mod:`.writer`: the zip writer (temporary file, re-read check, then rename);
* :mod:`.submit`: predict → clean up → export for every test volume (``iter_submit`` / ``submit``); not
  imported here, since it pulls in the inference engine.
"""

from .replace import replace_question, submission_ids
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
    "replace_question",
    "submission_ids",
    "submission_targets",
    "targets_from_shapes",
]
