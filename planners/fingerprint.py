"""Dataset fingerprint (``fingerprint.json``): what planning needs to know about a raw dataset.

Per case: shape, spacing, orientation, the union nonzero crop box, label and region voxel counts
and intensity statistics inside the brain mask; per dataset: pooled intensity statistics and
medians. Spatial quantities (shape, spacing, crop box) are in array axis order (z, y, x); origin
and direction stay in ITK order, exactly as the header gives them.

Intensities are summarised from a bounded random sample per case whose seed depends only on the
global seed and the case ID, so the result is byte-identical whatever the case order or the
number of worker processes.
"""

from __future__ import annotations

import logging
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from tqdm import tqdm

from mmseg_robust.artifacts import JsonArtifact, require_schema_version
from mmseg_robust.data.boxes import box_shape, nonzero_bounding_box, union_nonzero_mask
from mmseg_robust.data.case import Case
from mmseg_robust.data.discovery import RawDataset
from mmseg_robust.data.labels import REGIONS, LabelConvention, describe_resection_cavity
from mmseg_robust.data.modalities import MODALITIES, sort_modalities
from mmseg_robust.data.nifti_io import GEOMETRY_TOLERANCE, ImageGeometry, read_image
from mmseg_robust.errors import MMRobustError

logger = logging.getLogger(__name__)

FINGERPRINT_SCHEMA_VERSION = 1
#: File name of the fingerprint inside a preprocessed dataset folder.
FINGERPRINT_FILE_NAME = "fingerprint.json"
#: Brain voxels sampled per case and modality (nnU-Net samples 10,000 foreground voxels per case).
DEFAULT_SAMPLES = 10000
#: Percentiles kept for clipping-style normalisations.
LOW_PERCENTILE = 0.5
HIGH_PERCENTILE = 99.5


class FingerprintError(MMRobustError):
    """A fingerprint file that is missing, malformed or from another schema; or an unusable case."""


@dataclass(frozen=True)
class IntensityStatistics:
    """Summary of intensity samples (float64 arithmetic; population std)."""

    mean: float
    std: float
    median: float
    percentile_00_5: float
    percentile_99_5: float
    n_samples: int

    @classmethod
    def from_samples(cls, samples: np.ndarray) -> "IntensityStatistics":
        values = np.asarray(samples, dtype=np.float64)
        if values.size == 0:
            raise ValueError("no intensity samples")
        low, median, high = np.percentile(values, [LOW_PERCENTILE, 50.0, HIGH_PERCENTILE])
        return cls(mean=float(values.mean()), std=float(values.std()), median=float(median),
                   percentile_00_5=float(low), percentile_99_5=float(high), n_samples=int(values.size))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "IntensityStatistics":
        return cls(mean=float(data["mean"]), std=float(data["std"]), median=float(data["median"]),
                   percentile_00_5=float(data["percentile_00_5"]),
                   percentile_99_5=float(data["percentile_99_5"]), n_samples=int(data["n_samples"]))


@dataclass(frozen=True)
class CaseFingerprint:
    """One raw case. ``label_counts`` is keyed by the raw label value (as a string, since JSON
    keys are strings) and, like ``region_counts``, is empty for a case without a label."""

    case_id: str
    modalities: tuple[str, ...]
    shape: tuple[int, ...]
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]
    crop_box: tuple[tuple[int, int], ...]
    cropped_shape: tuple[int, ...]
    label_counts: dict[str, int]
    region_counts: dict[str, int]
    intensity: dict[str, IntensityStatistics]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["crop_box"] = [list(pair) for pair in self.crop_box]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "CaseFingerprint":
        return cls(case_id=str(data["case_id"]), modalities=tuple(data["modalities"]),
                   shape=tuple(int(s) for s in data["shape"]),
                   spacing=tuple(float(s) for s in data["spacing"]),
                   origin=tuple(float(o) for o in data["origin"]),
                   direction=tuple(float(d) for d in data["direction"]),
                   crop_box=tuple((int(a), int(b)) for a, b in data["crop_box"]),
                   cropped_shape=tuple(int(s) for s in data["cropped_shape"]),
                   label_counts={str(k): int(v) for k, v in data["label_counts"].items()},
                   region_counts={str(k): int(v) for k, v in data["region_counts"].items()},
                   intensity={m: IntensityStatistics.from_dict(s) for m, s in data["intensity"].items()})


@dataclass(frozen=True)
class DatasetFingerprint(JsonArtifact):
    """Everything ``mmrobust plan`` reads about a raw dataset; written to ``fingerprint.json``.

    Medians are per axis over cases, so median shapes may be fractional (x.5) for an even count.
    """

    artifact_kind = "fingerprint"
    artifact_error = FingerprintError
    missing_hint = "run mmrobust plan_and_preprocess first"
    file_name = FINGERPRINT_FILE_NAME

    dataset_name: str
    layout: str
    modalities: tuple[str, ...]
    label_convention: LabelConvention
    cases: tuple[CaseFingerprint, ...]
    intensity: dict[str, IntensityStatistics]
    median_spacing: tuple[float, ...]
    median_shape: tuple[float, ...]
    median_cropped_shape: tuple[float, ...]
    spacings_identical: bool
    seed: int
    samples_per_case: int
    schema_version: int = FINGERPRINT_SCHEMA_VERSION

    def case(self, case_id: str) -> CaseFingerprint:
        for case in self.cases:
            if case.case_id == case_id:
                return case
        raise FingerprintError(f"fingerprint of {self.dataset_name} has no case {case_id!r}")

    def resection_cavity_volumes_ml(self) -> dict[str, float]:
        """Case ID -> resection cavity volume (mL) of every case that has one (label convention
        with ``rc``, post-treatment data); empty when the convention has none."""
        rc = self.label_convention.rc
        if rc is None:
            return {}
        return {case.case_id: case.label_counts[str(rc)] * float(np.prod(case.spacing)) / 1000.0
                for case in self.cases if case.label_counts.get(str(rc))}

    def describe_labels(self) -> str:
        """The label convention, with the resection cavity's cases and volumes where it has one."""
        labelled = sum(bool(case.label_counts) for case in self.cases)
        return (describe_resection_cavity(self.label_convention, list(self.resection_cavity_volumes_ml().values()),
                                          labelled) or f"{self.label_convention.name} labels")

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": self.schema_version, "dataset_name": self.dataset_name,
                "layout": self.layout, "modalities": list(self.modalities),
                "label_convention": self.label_convention.to_dict(),
                "seed": self.seed, "samples_per_case": self.samples_per_case,
                "spacings_identical": self.spacings_identical,
                "median_spacing": list(self.median_spacing), "median_shape": list(self.median_shape),
                "median_cropped_shape": list(self.median_cropped_shape),
                "intensity": {m: asdict(s) for m, s in self.intensity.items()},
                "cases": [c.to_dict() for c in self.cases]}

    @classmethod
    def from_dict(cls, data: Any, source: str = "fingerprint") -> "DatasetFingerprint":
        version = require_schema_version(data, FINGERPRINT_SCHEMA_VERSION, source, "fingerprint", FingerprintError,
                                         "run mmrobust plan_and_preprocess again")
        try:
            return cls(dataset_name=str(data["dataset_name"]), layout=str(data["layout"]),
                       modalities=tuple(data["modalities"]),
                       label_convention=LabelConvention.from_dict(data["label_convention"]),
                       cases=tuple(CaseFingerprint.from_dict(c) for c in data["cases"]),
                       intensity={m: IntensityStatistics.from_dict(s) for m, s in data["intensity"].items()},
                       median_spacing=tuple(float(s) for s in data["median_spacing"]),
                       median_shape=tuple(float(s) for s in data["median_shape"]),
                       median_cropped_shape=tuple(float(s) for s in data["median_cropped_shape"]),
                       spacings_identical=bool(data["spacings_identical"]), seed=int(data["seed"]),
                       samples_per_case=int(data["samples_per_case"]), schema_version=version)
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise FingerprintError(
                f"{source}: malformed fingerprint ({type(error).__name__}: {error})") from None


def case_seed(seed: int, case_id: str, modality: str) -> list[int]:
    """Seed of one case's sample of one modality: independent of case order, process count and of
    which other modalities the case has."""
    return [int(seed), zlib.crc32(case_id.encode("utf-8")), MODALITIES.index(modality)]


def sample_values(values: np.ndarray, n: int, seed: Sequence[int]) -> np.ndarray:
    """At most ``n`` of ``values`` drawn without replacement (all of them, in order, if fewer)."""
    if values.size <= n:
        return values
    chosen = np.random.default_rng(list(seed)).choice(values.size, size=n, replace=False)
    # Sorted indices keep the memory access sequential; statistics do not depend on the order.
    return values[np.sort(chosen)]


def _label_counts(label: np.ndarray) -> dict[str, int]:
    values, counts = np.unique(label, return_counts=True)
    # Raw values are integers in every BraTS release, even when stored as floats.
    return {(str(int(v)) if float(v).is_integer() else repr(float(v))): int(c)
            for v, c in zip(values.tolist(), counts.tolist())}


def _region_counts(label_counts: Mapping[str, int], convention: LabelConvention) -> dict[str, int]:
    regions = convention.region_labels
    return {r: sum(label_counts.get(str(v), 0) for v in regions[r]) for r in REGIONS}


def _check_grid(case: Case, path: Path, geometry: ImageGeometry, reference: ImageGeometry) -> None:
    """Images of one case must share a grid; verify reports this too, but fingerprinting may run
    on unverified data and a mismatch would otherwise surface as a numpy broadcast error."""
    if geometry.size != reference.size:
        raise FingerprintError(f"{path}: case {case.case_id} image grid {geometry.array_shape} differs "
                               f"from {reference.array_shape} of its other images (run mmrobust verify)")


def fingerprint_case(case: Case, seed: int,
                     samples_per_case: int) -> tuple[CaseFingerprint, dict[str, np.ndarray]]:
    """Fingerprint one case; returns it and the intensity sample per modality (for pooling).

    Samples keep the images' stored dtype (int16 for most BraTS releases) to keep the data sent
    back from worker processes small; statistics are computed in float64.
    """
    if not case.modalities:
        raise FingerprintError(f"case {case.case_id}: no modality image")
    images: dict[str, np.ndarray] = {}
    reference: ImageGeometry | None = None
    for modality in case.modalities:
        array, geometry = read_image(case.images[modality])
        reference = reference or geometry
        _check_grid(case, case.images[modality], geometry, reference)
        images[modality] = array
    assert reference is not None
    label = None
    if case.label is not None:
        label, label_geometry = read_image(case.label)
        _check_grid(case, case.label, label_geometry, reference)

    brain = union_nonzero_mask(list(images.values()))
    if not np.any(brain):
        raise FingerprintError(f"{case.images[case.modalities[0]]}: case {case.case_id} has no nonzero "
                               f"voxel in any modality (empty brain mask)")
    # The label joins the images so that no tumour voxel can fall outside the crop.
    crop_box = nonzero_bounding_box(
        union_nonzero_mask(list(images.values()) + ([label] if label is not None else [])))

    samples: dict[str, np.ndarray] = {}
    intensity: dict[str, IntensityStatistics] = {}
    for modality, array in images.items():
        samples[modality] = sample_values(array[brain], samples_per_case,
                                          case_seed(seed, case.case_id, modality))
        intensity[modality] = IntensityStatistics.from_samples(samples[modality])

    label_counts = _label_counts(label) if label is not None else {}
    fingerprint = CaseFingerprint(
        case_id=case.case_id, modalities=case.modalities, shape=tuple(int(s) for s in brain.shape),
        # "+ 0.0" turns the -0.0 entries ITK headers often carry into 0.0 (same value, cleaner JSON).
        spacing=reference.array_spacing, origin=tuple(o + 0.0 for o in reference.origin),
        direction=tuple(d + 0.0 for d in reference.direction),
        crop_box=crop_box, cropped_shape=box_shape(crop_box),
        label_counts=label_counts,
        region_counts=_region_counts(label_counts, case.convention) if label is not None else {},
        intensity=intensity)
    return fingerprint, samples


def _median(rows: Sequence[Sequence[float]]) -> tuple[float, ...]:
    return tuple(float(v) for v in np.median(np.asarray(rows, dtype=np.float64), axis=0))


def _spacings_identical(spacings: Sequence[Sequence[float]]) -> bool:
    first = np.asarray(spacings[0], dtype=np.float64)
    return all(np.allclose(s, first, rtol=0, atol=GEOMETRY_TOLERANCE) for s in spacings)


def extract_fingerprint(dataset: RawDataset, dataset_name: str, num_processes: int = 1, seed: int = 0,
                        samples_per_case: int = DEFAULT_SAMPLES, progress: bool = True) -> DatasetFingerprint:
    """Fingerprint every case of ``dataset`` (in parallel with ``num_processes`` > 1).

    Same input gives identical ``to_dict()`` (and saved bytes) whatever ``num_processes``: per-case
    work is independently seeded and results are pooled in the dataset's case order.

    Args:
        dataset: the raw dataset, best verified first
            (:func:`~mmseg_robust.data.verify.verify_dataset`), with the label convention
            verification decided.
        dataset_name: the name recorded in the fingerprint (and later in the plans).
        num_processes: cases read at a time, in worker processes when above 1.
        seed: seed of the intensity samples (each case's and modality's own stream).
        samples_per_case: at most this many brain voxels per case and modality feed the
            intensity statistics (a case with fewer gives all of them); at least 1.
        progress: show a progress bar.

    Returns:
        Per case its geometry, crop box, label and region voxel counts and intensity statistics;
        per modality the pooled statistics; the dataset's medians. ``save`` writes it as JSON.

    Raises:
        FingerprintError: no case, ``samples_per_case`` below 1, a case whose images (or label)
            lie on different grids, or a case without any nonzero voxel.
        ImageReadError: an unreadable image or label file.
    """
    if not dataset.cases:
        raise FingerprintError(f"{dataset.root}: no case to fingerprint")
    if samples_per_case < 1:
        raise FingerprintError(f"{dataset.root}: samples per case must be at least 1, got {samples_per_case}")
    work = partial(fingerprint_case, seed=seed, samples_per_case=samples_per_case)
    bar = partial(tqdm, total=len(dataset.cases), desc="fingerprint", unit="case", disable=not progress)
    if num_processes > 1:
        with ProcessPoolExecutor(min(num_processes, len(dataset.cases))) as pool:
            results = list(bar(pool.map(work, dataset.cases)))
    else:
        results = list(bar(work(c) for c in dataset.cases))

    cases = tuple(fp for fp, _ in results)
    modalities = sort_modalities({m for fp in cases for m in fp.modalities})
    # Only the cases that have a modality contribute to its pooled statistics.
    intensity = {m: IntensityStatistics.from_samples(np.concatenate(
                     [np.asarray(s[m], dtype=np.float64) for _, s in results if m in s]))
                 for m in modalities}
    spacings = [fp.spacing for fp in cases]
    fingerprint = DatasetFingerprint(
        dataset_name=dataset_name, layout=dataset.layout_name, modalities=modalities,
        label_convention=dataset.layout.convention, cases=cases, intensity=intensity,
        median_spacing=_median(spacings), median_shape=_median([fp.shape for fp in cases]),
        median_cropped_shape=_median([fp.cropped_shape for fp in cases]),
        spacings_identical=_spacings_identical(spacings), seed=int(seed),
        samples_per_case=int(samples_per_case))
    logger.info("fingerprinted %d cases of %s: median spacing %s, median cropped shape %s, %s", len(cases),
                dataset_name, fingerprint.median_spacing, fingerprint.median_cropped_shape,
                fingerprint.describe_labels())
    return fingerprint
