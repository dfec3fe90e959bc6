"""A sentiment training run's settings and its self-describing folder (docs/design.md §10).

``config.json`` (schema-versioned) holds the training settings, the model's config (with the
feature dimensions of the data it was built for), the modalities, and the data file's path,
format and corpus: enough to rebuild the model, to resume the run, and for
``mmrobust plot-gradients`` to name the modalities. Torch-free.

Default folder: ``$MMROBUST_RESULTS/sentiment/<data file stem>__<model>__<strategy>/seed_<seed>``, with
the segmentation runs' suffixes (:func:`mmseg_robust.engine.run_folder.run_name`): ``__<fusion>fusion`` unless
the fusion is the mean, ``__only-<m1>+<m2>`` for a dedicated model.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Mapping

from mmseg_robust import __version__
from mmseg_robust.artifacts import read_json_artifact, require_schema_version
from mmseg_robust.atomic import write_json_atomic
from mmseg_robust.choices import (
    AMP_MODES,
    FUSIONS,
    MODEL_KINDS,
)
from mmseg_robust.engine.resume import RUNTIME_FIELDS, resume_config
from mmseg_robust.engine.run_folder import CONFIG_FILE, default_fusion
from mmseg_robust.engine.run_folder import run_name as engine_run_name
from mmseg_robust.errors import TrainingConfigError
from mmseg_robust.paths import data_folder
from mmseg_robust.sentiment.dataset import MODALITIES, parse_sentiment_modalities
from mmseg_robust.sentiment.errors import SentimentDataError
from mmseg_robust.strategy_config import RangeRule, StrategyConfig, check_fields, strategy_default

SENTIMENT_CONFIG_SCHEMA_VERSION = 1
#: The kind of run a ``config.json`` describes (segmentation runs have none).
RUN_KIND = "sentiment"
#: The folder under the results base that holds every sentiment run.
RESULTS_SUBFOLDER = "sentiment"
#: The fields that take one of a vocabulary's words.
_CHOICES: dict[str, tuple[str, ...]] = {"model": MODEL_KINDS, "fusion": FUSIONS, "amp": AMP_MODES}
#: Numeric fields: the test a value must pass and the rule it states ({name}: the field).
_RANGES: dict[str, RangeRule] = {
    "epochs": (lambda v: v >= 1, "need {name} >= 1"),
    "batch_size": (lambda v: v >= 1, "need {name} >= 1"),
    "learning_rate": (lambda v: v > 0, "need {name} > 0"),
    "weight_decay": (lambda v: v >= 0, "need {name} >= 0"),
    "grad_clip": (lambda v: v > 0, "need {name} > 0"),
    "seed": (lambda v: v >= 0, "need {name} >= 0"),
}
#: What a stored config without these fields was trained with (runs from before they existed).
_LEGACY_DEFAULTS: dict[str, Any] = {"fusion": "mean", "modalities": None}


@dataclass(frozen=True)
class SentimentTrainingConfig(StrategyConfig):
    """Every setting of a sentiment run. Defaults: Adam at 1e-3 with poly decay and gradient
    clipping at 0.8 (MulT's MOSI settings), batch 32, 40 epochs; CGGM's MOSI values rho 1.3 and
    lambda 0.2; the model sizes of :class:`~mmseg_robust.sentiment.model.SentimentModelConfig`;
    the strategy and the fusion of the segmentation path (``plain``, ``weighted``; the mean for
    early fusion); every modality (``modalities`` None) or, for a dedicated model, the ones named
    (``"a,v"``; the U. base. of the sentiment study). ``device`` is a runtime setting (a resumed
    run may change it); every other field must stay the stored one on resume, except a larger
    ``epochs``.

    Raises:
        TrainingConfigError: a word outside its vocabulary (did-you-mean), a number out of range,
            a strategy other than ``plain`` or a fusion other than the mean for the early-fusion
            baseline, an unknown modality.
    """

    model: str = "ds"
    fusion: str | None = None
    modalities: tuple[str, ...] | None = None
    cggm_rho: float = strategy_default(1.3)
    cggm_lambda: float = strategy_default(0.2)
    epochs: int = 40
    batch_size: int = 32
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    poly_exponent: float = 0.9
    grad_clip: float = 0.8
    width: int = 40
    heads: int = 5
    encoder_layers: int = 2
    backbone_layers: int = 2
    dropout: float = 0.1
    amp: str = "auto"
    device: str = "auto"
    seed: int = 0
    schema_version: int = SENTIMENT_CONFIG_SCHEMA_VERSION

    def __post_init__(self) -> None:
        if self.fusion is None:
            object.__setattr__(self, "fusion", default_fusion(self.model))
        if self.modalities is not None:
            try:
                object.__setattr__(self, "modalities", parse_sentiment_modalities(self.modalities))
            except SentimentDataError as error:
                raise TrainingConfigError(str(error)) from None
        self.check_strategy(TrainingConfigError)
        check_fields(self, _CHOICES, _RANGES, TrainingConfigError)
        self.check_model_strategy(self.model, self.fusion, TrainingConfigError)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["modalities"] = None if self.modalities is None else list(self.modalities)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = CONFIG_FILE) -> "SentimentTrainingConfig":
        """The inverse of :meth:`to_dict`.

        Raises:
            TrainingConfigError: another schema version, or a value the config refuses.
        """
        require_schema_version(data, SENTIMENT_CONFIG_SCHEMA_VERSION, source, "sentiment training config",
                               TrainingConfigError, "train again")
        known = {f.name for f in fields(cls)}
        return cls(**{**_LEGACY_DEFAULTS, **{k: v for k, v in data.items() if k in known}})

    def model_settings(self) -> dict[str, Any]:
        """The :class:`~mmseg_robust.sentiment.model.SentimentModelConfig` arguments besides the
        feature dimensions."""
        return {"kind": self.model, "width": self.width, "heads": self.heads, "encoder_layers": self.encoder_layers,
                "backbone_layers": self.backbone_layers, "dropout": self.dropout, "fusion": self.fusion,
                "modalities": self.model_modalities}

    @property
    def model_modalities(self) -> tuple[str, ...]:
        """The modalities the model has branches for."""
        return MODALITIES if self.modalities is None else self.modalities


def run_name(data_path: str | os.PathLike[str], config: SentimentTrainingConfig) -> str:
    """``<data file stem>__<model>__<strategy>`` and the segmentation runs' fusion and dedicated suffixes."""
    return engine_run_name(f"{Path(data_path).stem}__{config.model}", "ds", config.strategy, config.fusion,
                                 config.modalities)


def default_run_dir(data_path: str | os.PathLike[str], config: SentimentTrainingConfig,
                    results: str | os.PathLike[str] | None = None) -> Path:
    """``<results>/sentiment/<run_name>/seed_<seed>`` under ``results`` or ``$MMROBUST_RESULTS``.

    Raises:
        ConfigurationError: neither ``results`` nor ``$MMROBUST_RESULTS`` is set.
    """
    return data_folder("results", results) / RESULTS_SUBFOLDER / run_name(data_path, config) / f"seed_{config.seed}"


@dataclass(frozen=True)
class SentimentRunConfig:
    """What ``config.json`` of a sentiment run holds."""

    training: SentimentTrainingConfig
    model: dict[str, Any]
    data: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": SENTIMENT_CONFIG_SCHEMA_VERSION, "kind": RUN_KIND,
                "modalities": list(self.training.model_modalities),
                "training": self.training.to_dict(), "model": dict(self.model), "data": dict(self.data),
                "mmrobust_version": __version__}


def save_sentiment_run_config(output_dir: str | os.PathLike[str], run: SentimentRunConfig) -> Path:
    """Write ``config.json`` atomically."""
    path = Path(output_dir) / CONFIG_FILE
    write_json_atomic(path, run.to_dict())
    return path


def load_sentiment_run_config(output_dir: str | os.PathLike[str]) -> SentimentRunConfig:
    """Read back :func:`save_sentiment_run_config`'s file.

    Raises:
        TrainingConfigError: no such file, not a sentiment run's, another schema version.
    """
    path = Path(output_dir) / CONFIG_FILE
    data = read_json_artifact(path, "training config", TrainingConfigError, "not a run folder of mmrobust sentiment "
                              "train")
    if not isinstance(data, dict) or data.get("kind") != RUN_KIND:
        raise TrainingConfigError(f"{path}: not a sentiment run (a segmentation run's config?)")
    require_schema_version(data, SENTIMENT_CONFIG_SCHEMA_VERSION, str(path), "sentiment run config",
                           TrainingConfigError, "train again")
    return SentimentRunConfig(SentimentTrainingConfig.from_dict(data["training"], str(path)), data["model"],
                              data["data"])


def resolve_sentiment_run(changes: Mapping[str, Any], data_path: str | os.PathLike[str],
                          output_dir: str | os.PathLike[str] | None = None, resume: bool = False,
                          results: str | os.PathLike[str] | None = None) -> tuple[SentimentTrainingConfig, Path]:
    """The settings and folder of a run from the settings a caller gave (``changes``; the others
    are the defaults, or with ``resume`` the stored run's, except the runtime ``device``, which is
    this call's).

    Raises:
        ConfigurationError: no ``output_dir`` and no results folder.
        TrainingConfigError: a setting the config refuses; with ``resume``, no run in the folder or
            a change the run cannot take (:func:`mmseg_robust.engine.resume.resume_config`).
    """
    config = SentimentTrainingConfig(**changes)
    folder = Path(output_dir) if output_dir is not None else default_run_dir(data_path, config, results)
    if resume:
        stored = load_sentiment_run_config(folder).training
        runtime = {f.name: getattr(config, f.name) for f in fields(config) if f.name in RUNTIME_FIELDS}
        config = resume_config(stored, {**runtime, **changes})
    return config, folder
