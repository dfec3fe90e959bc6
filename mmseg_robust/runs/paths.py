"""Where a training run lives: ``<results>/<dataset>/<run name>/fold_<f>``.

The one rule for a segmentation run's folder (its name is the engine's
:func:`~mmseg_robust.engine.run_folder.run_name`), used by training (where it writes), prediction
and evaluation (where they read). Torch-free, so the command line resolves folders before heavy imports.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

from mmseg_robust.engine.run_folder import run_name
from mmseg_robust.errors import ConfigurationError
from mmseg_robust.paths import data_folder

#: Fold used when a run is named without one.
DEFAULT_FOLD = 0
#: How :class:`RunFolderError` names the two ways of pointing at runs.
RUN_FOLDERS_PARAMETER = "model_dirs"
RUN_IDENTITY_PARAMETERS = "dataset/configuration/folds"


class RunFolderError(ConfigurationError):
    """Run folders asked for both ways at once, or in neither way."""


def run_folder(results_root: str | os.PathLike[str], dataset: str, configuration: str, fold: int,
               model: str = "ds", strategy: str | None = None, fusion: str | None = None,
               modalities: Sequence[str] | None = None) -> Path:
    """The fold folder of a run: ``<results_root>/<dataset>/<run_name(...)>/fold_<fold>``.

    The one rule by which training names the folder it writes and prediction and evaluation find
    it. A pure path computation: nothing is checked, nothing raised, and the folder need not exist.

    Args:
        results_root: the results base folder (``$MMROBUST_RESULTS`` for the command line).
        dataset: the dataset's name (``BraTS2018``).
        configuration: the plans' configuration (``3d_fullres``, ``2d``).
        fold: the fold of ``splits.json``.
        model: ``ds`` (the Dynamic-Sharing U-Net) or ``early_fusion`` (the baseline).
        strategy: the DS model's gradient strategy; None: the default (``plain``).
        fusion: the DS model's fusion; None: the model's default (learned ``weighted``; the
            early-fusion baseline has none). ``mean`` adds nothing to the name.
        modalities: a dedicated model's sequences, in canonical order (``__only-flair+t1``);
            None: all the plans' sequences.
    """
    return Path(results_root) / dataset / run_name(configuration, model, strategy, fusion, modalities) / f"fold_{fold}"


def resolve_run_folders(model_dirs: Sequence[str | os.PathLike[str]] | None, dataset: str | None,
                        configuration: str, folds: Iterable[int] = (), model: str = "ds",
                        strategy: str | None = None, fusion: str | None = None,
                        results: str | os.PathLike[str] | None = None) -> list[Path]:
    """The fold folders of a model: given as folders, or named by dataset, configuration and folds.

    Args:
        model_dirs: run fold folders; excludes ``dataset``.
        dataset: names the run with ``configuration``, ``folds`` (default: fold 0), ``model``,
            ``strategy`` and ``fusion``, under ``results``.
        configuration: the plans' configuration of the named run (``3d_fullres``, ``2d``).
        folds: the named run's folds, one folder each; empty: fold 0.
        model: ``ds`` or ``early_fusion``, as in :func:`run_folder`.
        strategy: the DS model's strategy; None: the default.
        fusion: the DS model's fusion; None: the default.
        results: the results base folder (default: ``$MMROBUST_RESULTS``).

    Raises:
        RunFolderError: both ``model_dirs`` and ``dataset``, or neither.
        ConfigurationError: ``dataset`` without ``results`` or ``$MMROBUST_RESULTS``.
    """
    if model_dirs and dataset:
        raise RunFolderError(f"give either {RUN_FOLDERS_PARAMETER} or {RUN_IDENTITY_PARAMETERS}, not both")
    if model_dirs:
        return [Path(d) for d in model_dirs]
    if not dataset:
        raise RunFolderError(f"no model: give {RUN_FOLDERS_PARAMETER} or {RUN_IDENTITY_PARAMETERS}")
    root = data_folder("results", results)
    return [run_folder(root, dataset, configuration, fold, model, strategy, fusion)
            for fold in (tuple(folds) or (DEFAULT_FOLD,))]
