"""Experiment plans (``plans.json``): typed, versioned, everything preprocessing and training need.

Spatial quantities (spacing, shapes, patch sizes, kernels, strides) are in array axis order
(z, y, x), the order of every numpy array in mmrobust.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping

from mmseg_robust.artifacts import JsonArtifact, require_schema_version
from mmseg_robust.data.labels import LabelConvention
from mmseg_robust.errors import MMRobustError

PLANS_SCHEMA_VERSION = 1
#: File name of the plans inside a preprocessed dataset folder.
PLANS_FILE_NAME = "plans.json"
#: Configurations mmrobust plans; ``2d`` trains on axial slices (the z axis is dropped).
CONFIGURATION_NAMES: tuple[str, ...] = ("3d_fullres", "2d")
#: Stored image dtypes accepted by ``--dtype``.
IMAGE_DTYPES: tuple[str, ...] = ("float16", "float32")


class PlansError(MMRobustError):
    """A plans file that is missing, from another schema, or inconsistent with its use."""


@dataclass(frozen=True)
class PlanOverrides:
    """What the user chose for a configuration instead of the planner (None: the planner decides).

    Recorded in the configuration's plan so that replanning (a rerun of ``plan_and_preprocess``
    after adding cases, say) applies them again. Stored as the fields that are set, so plans
    written before this class existed (a plain dict with the same keys, or nothing) read back.
    """

    patch_size: tuple[int, ...] | None = None
    batch_size: int | None = None
    base_features: int | None = None

    def __bool__(self) -> bool:
        return any(getattr(self, f.name) is not None for f in fields(self))

    def updated(self, newer: "PlanOverrides") -> "PlanOverrides":
        """These overrides with every field that ``newer`` sets taken from ``newer``."""
        return PlanOverrides(**{f.name: getattr(newer, f.name) if getattr(newer, f.name) is not None
                                else getattr(self, f.name) for f in fields(self)})

    def to_dict(self) -> dict[str, Any]:
        return {f.name: list(value) if isinstance(value, tuple) else value
                for f in fields(self) if (value := getattr(self, f.name)) is not None}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "PlanOverrides":
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise TypeError(f"unknown override(s) {', '.join(sorted(unknown))}")
        patch = data.get("patch_size")
        return cls(patch_size=None if patch is None else tuple(int(p) for p in patch),
                   batch_size=None if data.get("batch_size") is None else int(data["batch_size"]),
                   base_features=None if data.get("base_features") is None else int(data["base_features"]))

    def describe(self) -> str:
        """``patch_size=96,96 batch_size=4`` (empty when nothing is overridden)."""
        return " ".join(f"{key}={','.join(map(str, value)) if isinstance(value, list) else value}"
                        for key, value in self.to_dict().items())


@dataclass(frozen=True)
class ConfigurationPlan:
    """Network topology and patch sampling of one configuration."""

    name: str
    spatial_dims: int
    patch_size: tuple[int, ...]
    batch_size: int
    features_per_stage: tuple[int, ...]
    kernel_sizes: tuple[tuple[int, ...], ...]
    strides: tuple[tuple[int, ...], ...]
    data_identifier: str
    estimated_memory_gb: float
    n_conv_per_stage: int = 2
    overrides: PlanOverrides = field(default_factory=PlanOverrides)

    @property
    def n_stages(self) -> int:
        return len(self.features_per_stage)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "overrides": self.overrides.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ConfigurationPlan":
        return cls(**{**data,
                      "patch_size": tuple(data["patch_size"]),
                      "features_per_stage": tuple(data["features_per_stage"]),
                      "kernel_sizes": tuple(tuple(k) for k in data["kernel_sizes"]),
                      "strides": tuple(tuple(s) for s in data["strides"]),
                      "overrides": PlanOverrides.from_dict(data.get("overrides") or {})})


@dataclass(frozen=True)
class Plans(JsonArtifact):
    """What ``mmrobust plan`` decided for a dataset; written to ``plans.json``."""

    artifact_kind = "plans"
    artifact_error = PlansError
    missing_hint = "run mmrobust plan_and_preprocess first"
    file_name = PLANS_FILE_NAME

    dataset_name: str
    modalities: tuple[str, ...]
    label_convention: LabelConvention
    target_spacing: tuple[float, ...]
    resample: bool
    normalization: dict[str, str]
    image_dtype: str
    median_shape: tuple[int, ...]
    gpu_memory_gb: float
    configurations: dict[str, ConfigurationPlan]
    schema_version: int = PLANS_SCHEMA_VERSION

    def configuration(self, name: str) -> ConfigurationPlan:
        if name not in self.configurations:
            raise PlansError(f"plans of {self.dataset_name} have no configuration {name!r} "
                             f"(planned: {', '.join(self.configurations)})")
        return self.configurations[name]

    def preprocessing_signature(self) -> dict[str, Any]:
        """Everything the bytes of a preprocessed case depend on; a stored case with another
        signature is stale and is preprocessed again."""
        return {"schema_version": self.schema_version, "modalities": list(self.modalities),
                "target_spacing": list(self.target_spacing), "resample": self.resample,
                "normalization": dict(self.normalization), "image_dtype": self.image_dtype,
                "label_convention": self.label_convention.to_dict()}

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["label_convention"] = self.label_convention.to_dict()
        data["configurations"] = {name: config.to_dict() for name, config in self.configurations.items()}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "plans") -> "Plans":
        require_schema_version(data, PLANS_SCHEMA_VERSION, source, "plans", PlansError, "run mmrobust plan again")
        try:
            return cls(**{**data,
                          "modalities": tuple(data["modalities"]),
                          "label_convention": LabelConvention.from_dict(data["label_convention"]),
                          "target_spacing": tuple(float(s) for s in data["target_spacing"]),
                          "median_shape": tuple(data["median_shape"]),
                          "configurations": {k: ConfigurationPlan.from_dict(v)
                                             for k, v in data["configurations"].items()}})
        except (KeyError, TypeError, ValueError) as error:
            raise PlansError(f"{source}: malformed plans ({error})") from None
