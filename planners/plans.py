"""Experiment plans (``plans.json``): typed, versioned, everything preprocessing and training need.

Spatial quantities (spacing, shapes, patch sizes, kernels, strides) are in array axis order
(z, y, x), the order of every numpy array in mmrobust.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mmseg_robust.artifacts import read_json_artifact, require_schema_version
from mmseg_robust.atomic import write_json_atomic
from mmseg_robust.data.labels import LabelConvention
from mmseg_robust.errors import MMRobustError

PLANS_SCHEMA_VERSION = 1
#: Configurations mmrobust plans; ``2d`` trains on axial slices (the z axis is dropped).
CONFIGURATION_NAMES: tuple[str, ...] = ("3d_fullres", "2d")
#: Stored image dtypes accepted by ``--dtype``.
IMAGE_DTYPES: tuple[str, ...] = ("float16", "float32")


class PlansError(MMRobustError):
    """A plans file that is missing, from another schema, or inconsistent with its use."""


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
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def n_stages(self) -> int:
        return len(self.features_per_stage)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ConfigurationPlan":
        return cls(**{**data,
                      "patch_size": tuple(data["patch_size"]),
                      "features_per_stage": tuple(data["features_per_stage"]),
                      "kernel_sizes": tuple(tuple(k) for k in data["kernel_sizes"]),
                      "strides": tuple(tuple(s) for s in data["strides"])})


@dataclass(frozen=True)
class Plans:
    """What ``mmrobust plan`` decided for a dataset; written to ``plans.json``."""

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
        except (KeyError, TypeError) as error:
            raise PlansError(f"{source}: malformed plans ({error})") from None

    def save(self, path: str | Path) -> Path:
        write_json_atomic(path, self.to_dict())
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> "Plans":
        data = read_json_artifact(path, "plans", PlansError, "run mmrobust plan_and_preprocess first")
        return cls.from_dict(data, str(path))
