"""A raw case (its modality files, label file and label convention) and problems found in raw data."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from mmseg_robust.data.labels import LabelConvention
from mmseg_robust.data.modalities import MODALITIES


@dataclass(frozen=True)
class Case:
    """One subject of a raw dataset, in any supported layout.

    ``images`` maps canonical modality names to files; a subset of the four is allowed (an
    incomplete case). ``label`` is None for cases without a segmentation. ``expected_images`` and
    ``expected_label`` give where the layout would put each file, so a missing one can be named.
    """

    case_id: str
    layout: str
    convention: LabelConvention
    images: Mapping[str, Path]
    label: Path | None
    expected_images: Mapping[str, Path] = field(repr=False)
    expected_label: Path = field(repr=False)
    group: str | None = None

    @property
    def modalities(self) -> tuple[str, ...]:
        """Modalities present, in canonical order."""
        return tuple(m for m in MODALITIES if m in self.images)

    @property
    def missing_modalities(self) -> tuple[str, ...]:
        return tuple(m for m in MODALITIES if m not in self.images)

    @property
    def files(self) -> list[Path]:
        """Every file of the case that exists: images in canonical order, then the label."""
        return [self.images[m] for m in self.modalities] + ([self.label] if self.label else [])


@dataclass(frozen=True)
class Problem:
    """One problem in raw data, reported as ``<path>: <message>``."""

    path: Path
    message: str
    case_id: str | None = None

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"
