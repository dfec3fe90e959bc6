"""The training engine, task-agnostic (docs/design.md §7): the epoch loop with its hooks
(:mod:`~mmseg_robust.engine.epochs`), the optimiser steps and best-epoch rule
(:mod:`~mmseg_robust.engine.loop`), checkpoints (:mod:`~mmseg_robust.engine.checkpoint`), the
training log and its plot (:mod:`~mmseg_robust.engine.progress`) and the strategies' per-step log
(:mod:`~mmseg_robust.engine.step_log`). Both applications (segmentation in
:mod:`mmseg_robust.training`, sentiment in :mod:`mmseg_robust.sentiment`) train through it; it
knows the models and tasks only through :mod:`mmseg_robust.multimodal`'s protocol.

Nothing is imported here, so that torch-free readers (:mod:`~mmseg_robust.engine.run_files`)
stay torch-free.
"""
