"""The training configuration: every hyper-parameter of a run, checked, and its ``config.json``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from mmseg_robust import __version__
from mmseg_robust.artifacts import read_json_artifact, require_schema_version
from mmseg_robust.atomic import write_json_atomic
from mmseg_robust.choices import AMP_MODES, FUSIONS, MODEL_KINDS, OPTIMIZERS
from mmseg_robust.data.modalities import UnknownModalityError, parse_modality_list
from mmseg_robust.engine.run_folder import CONFIG_FILE, default_fusion, run_name
from mmseg_robust.errors import TrainingConfigError
from mmseg_robust.planners.plans import CONFIGURATION_NAMES, Plans
from mmseg_robust.runs.paths import run_folder
from mmseg_robust.strategy_config import RangeRule, StrategyConfig, check_fields

TRAINING_CONFIG_SCHEMA_VERSION = 1
#: Values of fields added after schema version 1 for config files that predate them: what those
#: runs did. Before ``cggm_balance`` existed, CGGM divided the change of an EMA of the utilisation;
#: no rule of today reproduces it, so such runs cannot be resumed (``training.trainer``).
LEGACY_DEFAULTS: dict[str, Any] = {"gmd_cggm_composition": "rows", "fusion": "mean", "modalities": None,
                                   "subset_ranking_weight": 0.0, "cggm_magnitude_scope": "branch"}
#: Fields whose absence from a stored config means the run cannot continue exactly.
RESUME_REQUIRES: tuple[str, ...] = ("cggm_balance",)
#: The fields that take one of a vocabulary's words.
_CHOICES: dict[str, tuple[str, ...]] = {
    "configuration": CONFIGURATION_NAMES, "model": MODEL_KINDS, "optimizer": OPTIMIZERS, "fusion": FUSIONS,
    "amp": AMP_MODES}
#: Numeric fields: the test a value must pass and the rule it states ({name}: the field).
_RANGES: dict[str, RangeRule] = {
    "epochs": (lambda v: v >= 1, "need {name} >= 1"),
    "iters_per_epoch": (lambda v: v >= 1, "need {name} >= 1"),
}


@dataclass(frozen=True)
class TrainingConfig(StrategyConfig):
    """Every hyper-parameter of a segmentation run; defaults follow docs/design.md §7 (nnU-Net's)
    and, for the fusion and the strategy, the robustness study. The strategy's fields
    (keyword-only: ``strategy``, ``subsets``, ``gmd_scope``, ``cggm_*``, ...) and their checks are
    :class:`~mmseg_robust.strategy_config.StrategyConfig`'s, with CGGM's BraTS defaults.

    Args:
        dataset: the dataset's name (``BraTS2018``), as under ``$MMROBUST_PREPROCESSED``.
        configuration: the plans' configuration (``3d_fullres``, ``2d``).
        fold: the fold of ``splits.json``.
        model: ``ds`` (the Dynamic-Sharing U-Net) or ``early_fusion`` (the baseline).
        modalities: the sequences the network has a branch for; None: every one of the plans.
        fusion: ``mean``, ``weighted`` or ``gated``; None: ``weighted`` for the DS network,
            ``mean`` (the only one) for early fusion.
        epochs: epochs to train (a resumed run may raise it).
        iters_per_epoch: optimiser steps per epoch.
        optimizer: ``sgd`` (Nesterov) or ``adam``.
        learning_rate: the initial learning rate of the poly schedule.
        momentum: SGD's momentum.
        weight_decay: L2 weight decay.
        poly_exponent: the poly schedule's exponent.
        grad_clip: the gradient-norm clip.
        amp: ``auto``, ``bf16``, ``fp16`` or ``off``.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (a runtime setting).
        compile: ``torch.compile`` the network (a runtime setting).
        deep_supervision: losses at the coarser decoder stages too.
        num_workers: data-loading processes (a runtime setting).
        seed: of every random draw of the run.
        oversample_foreground: the share of patches centred on the tumour.
        val_patches_per_case: validation patches per case each epoch.
        ema_momentum: smoothing of the validation Dice that picks the best checkpoint.
        schema_version: the file format (written, never set by hand).
        strategy: ``plain``, ``gmd``, ``cggm`` or ``gmd+cggm``; None: the default (``plain``).
        subsets: the subsets a step trains (``all``, ``full``, ``missing-K``, ``k=N``).
        gmd_scope: the parameters GMD measures conflicts on (``full``, ``head``, ``output``).
        gmd_cggm_composition: how ``gmd+cggm`` combines the two.
        cggm_rho, cggm_lambda, cggm_balance, cggm_ema, cggm_direction, cggm_magnitude_scope:
            CGGM's settings (:class:`~mmseg_robust.strategy_config.CGGMSettings`; rho 1.2,
            lambda 0.1 for BraTS).
        diagnostics_every: log per-subset gradients every N steps (0: never).
        subset_ranking_weight: ``plain``'s "more sequences must not hurt" term (0: off).

    Raises:
        TrainingConfigError: a word outside its vocabulary (with a did-you-mean), a number out of
            range, an unknown sequence, a fusion or strategy early fusion cannot use.
    """

    dataset: str
    configuration: str
    fold: int
    model: str = "ds"
    #: The sequences the network has a branch for (canonical order); None: every one of the plans.
    #: A subset trains a dedicated model (GMD's "U. base."; a site that only acquires those).
    modalities: tuple[str, ...] | None = None
    fusion: str | None = None
    epochs: int = 1000
    iters_per_epoch: int = 250
    optimizer: str = "sgd"
    learning_rate: float = 1e-2
    momentum: float = 0.99
    weight_decay: float = 3e-5
    poly_exponent: float = 0.9
    grad_clip: float = 12.0
    amp: str = "auto"
    device: str = "auto"
    compile: bool = False
    deep_supervision: bool = True
    num_workers: int = 2
    seed: int = 0
    oversample_foreground: float = 0.33
    val_patches_per_case: int = 2
    ema_momentum: float = 0.9
    schema_version: int = TRAINING_CONFIG_SCHEMA_VERSION

    def __post_init__(self) -> None:
        if self.modalities is not None:
            try:
                object.__setattr__(self, "modalities", parse_modality_list(self.modalities, "modalities"))
            except UnknownModalityError as error:
                raise TrainingConfigError(str(error)) from None
        if self.fusion is None:
            object.__setattr__(self, "fusion", default_fusion(self.model))
        self.check_strategy(TrainingConfigError)
        check_fields(self, _CHOICES, _RANGES, TrainingConfigError)
        self.check_model_strategy(self.model, self.fusion, TrainingConfigError, network="network")

    @property
    def run_name(self) -> str:
        """The results folder's name, :func:`mmseg_robust.engine.run_folder.run_name`."""
        return run_name(self.configuration, self.model, self.strategy, self.fusion, self.modalities)

    def output_dir(self, results: Path) -> Path:
        """This run's fold folder under the results base ``results`` (:func:`~mmseg_robust.runs.paths.run_folder`)."""
        return run_folder(results, self.dataset, self.configuration, self.fold, self.model, self.strategy,
                          self.fusion, self.modalities)

    def network_modalities(self, plans: Plans) -> tuple[str, ...]:
        """The sequences the run's network has branches for: ``modalities``, or the plans' when None.

        Raises:
            TrainingConfigError: a sequence the plans (the preprocessed data) do not have.
        """
        if self.modalities is None:
            return tuple(plans.modalities)
        unknown = [m for m in self.modalities if m not in plans.modalities]
        if unknown:
            raise TrainingConfigError(f"modalities {','.join(self.modalities)}: the dataset {plans.dataset_name} has "
                                      f"no {', '.join(unknown)} (it has {', '.join(plans.modalities)})")
        return self.modalities

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = CONFIG_FILE) -> "TrainingConfig":
        require_schema_version(data, TRAINING_CONFIG_SCHEMA_VERSION, source, "training config",
                               TrainingConfigError, "train again")
        known = {f.name for f in fields(cls)}
        data = {**LEGACY_DEFAULTS, **data}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class RunSplit:
    """The cases a run was trained and validated on, and its split's held-out test cases, as
    ``splits.json`` said when the run started: a run folder names its own evaluation cases even
    when several splits (RFNet's three draws) live in different preprocessed folders."""

    fold: int
    val: tuple[str, ...]
    test: tuple[str, ...]
    source: str

    def to_dict(self) -> dict[str, Any]:
        return {"fold": self.fold, "val": list(self.val), "test": list(self.test), "source": self.source}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunSplit":
        return cls(int(data["fold"]), tuple(map(str, data["val"])), tuple(map(str, data["test"])),
                   str(data["source"]))


def save_run_config(output_dir: Path, config: TrainingConfig, plans: Plans, split: RunSplit | None = None) -> Path:
    """``config.json``: the training config, the plans and the code version, enough to rebuild the
    model, and the run's split (:class:`RunSplit`) when known."""
    path = Path(output_dir) / CONFIG_FILE
    data = {"training": config.to_dict(), "plans": plans.to_dict(), "mmrobust_version": __version__}
    if split is not None:
        data["split"] = split.to_dict()
    write_json_atomic(path, data)
    return path


def load_run_split(output_dir: Path) -> RunSplit | None:
    """The split :func:`save_run_config` recorded; None for runs that predate the record."""
    path = Path(output_dir) / CONFIG_FILE
    data = read_json_artifact(path, "training config", TrainingConfigError, "not a results folder of mmrobust train")
    try:
        return RunSplit.from_dict(data["split"]) if "split" in data else None
    except (KeyError, TypeError, ValueError) as error:
        raise TrainingConfigError(f"{path}: malformed 'split' ({type(error).__name__}: {error})") from None


def load_run_config(output_dir: Path) -> tuple[TrainingConfig, Plans]:
    """Read back :func:`save_run_config`'s file."""
    path = Path(output_dir) / CONFIG_FILE
    data = read_json_artifact(path, "training config", TrainingConfigError, "not a results folder of mmrobust train")
    return TrainingConfig.from_dict(data["training"], str(path)), Plans.from_dict(data["plans"], str(path))


def run_modalities(output_dir: Path) -> tuple[str, ...]:
    """The modalities of any run folder: ``config.json``'s ``modalities`` where the run records them
    (sentiment runs), else its network's (segmentation runs: the training config's, else the plans').

    Raises:
        TrainingConfigError: no readable ``config.json``, or one of another schema.
    """
    path = Path(output_dir) / CONFIG_FILE
    data = read_json_artifact(path, "training config", TrainingConfigError, "not a results folder of mmrobust train")
    if isinstance(data, dict) and "modalities" in data:
        return tuple(data["modalities"])
    config, plans = load_run_config(output_dir)
    return config.network_modalities(plans)
