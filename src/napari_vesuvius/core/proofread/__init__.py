"""Proofreading: accept a prediction as labels, edit them, save versions safely, and fine-tune on them.

Qt-free. Modules (import them directly; this package imports nothing so that :mod:`..dataset` can use
:mod:`.naming` cheaply):

* :mod:`.naming` — ``<id>.v001.tif`` versions and the ``<id>.autosave.tif`` file next to an original;
* :mod:`.region` — boxes (``z0:z1,y0:y1,x0:x1``) and in-memory crops of lazy volumes;
* :mod:`.accept` — probability/mask → editable labels that keep the existing ignore (2) regions;
* :mod:`.save` — versioned saves (TIFF streamed, zarr copy-on-write: only touched chunks rewritten);
* :mod:`.autosave` — the atomic ``<id>.autosave.tif`` (labels, their box, the accepted baseline);
* :mod:`.session` — one editing session (crop, baseline, target) tying the above together;
* :mod:`.diff` — what the user changed against the accepted model mask;
* :mod:`.tools` — component tools: delete/keep, split by a local threshold, diagonal bridges;
* :mod:`.finetune` — fine-tune the current model on corrected volumes, predict and compare scores.
"""
