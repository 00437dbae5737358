"""Training and fine-tuning of surface-detection networks (Qt-free; torch imported lazily).

Modules: :mod:`.config` (the exact run settings), :mod:`.data` (volumes, split, patch sampler),
:mod:`.augment` (CT augmentations), :mod:`.loss` (Dice + CE with the ignore label masked),
:mod:`.runner` (the training job and its run folder), :mod:`.validation` (pseudo-Dice, leaderboard score),
:mod:`.monitor` (follow ``metrics.jsonl``) and :mod:`.process` (the training subprocess for the widget).
"""
