"""Proofreading: accept a prediction as labels, edit them, save versions safely, and fine-tune on them.

Qt-free. This package imports nothing itself, so that :mod:`..dataset` and :mod:`..training.data` can use
:mod:`.naming` without loading the rest: import the modules directly. ``__all__`` lists them; their
public names (those the Proofread widget, the ``finetune`` CLI and other packages use) are:

* :mod:`.naming` — ``<id>.v001.tif`` versions and the ``<id>.autosave.tif`` file next to an original:
  ``is_derived_name`` (dataset listings skip these), ``split_name``, ``version_path``,
  ``latest_version``, ``autosave_path``;
* :mod:`.region` — boxes (``z0:z1,y0:y1,x0:x1``) and in-memory crops of lazy volumes: ``Box``,
  ``parse_box``, ``format_box``, ``full_box``, ``grow_box``, ``visible_box``, ``read_crop``;
* :mod:`.accept` — probability/mask → editable labels that keep the existing ignore (2) regions:
  ``iter_accept``, ``MAX_EDIT_VOXELS``;
* :mod:`.save` — versioned saves (TIFF streamed, zarr copy-on-write: only touched chunks rewritten):
  ``save_version``, ``iter_save_version``;
* :mod:`.autosave` — the atomic ``<id>.autosave.tif`` (labels, their box, the accepted baseline),
  never replaced by an older snapshot: ``next_generation``, ``write_autosave``, ``read_autosave``,
  ``discard_autosave``;
* :mod:`.session` — one editing session (crop, baseline, target): ``EditSession``, ``check_target``;
* :mod:`.diff` — what the user changed against the accepted model mask: ``diff_counts``, ``DIFF_COLORS``;
* :mod:`.tools` — component tools: delete/keep, ``split_component`` by a local threshold,
  ``remove_diagonal_bridges``;
* :mod:`.finetune` — fine-tune the current model on corrected volumes, predict and compare scores:
  ``training_pairs``, ``finetune_config``, ``iter_finetune``, ``iter_write_training_pair``,
  ``best_checkpoint``, ``iter_predict_region``, ``iter_compare``, ``CORRECTED_DIR``, ``FINETUNE_LR``.

Label values (0 background, 1 surface, 2 ignore) are described in ``docs/challenge.md``.
"""

__all__ = ["accept", "autosave", "diff", "finetune", "naming", "region", "save", "session", "tools"]
