"""On-disk format of a preprocessed case: one folder ``<out>/<case_id>/`` holding

- ``images.npy``      float16/float32 ``(C, z, y, x)``, the case's modalities in canonical order;
- ``seg.npy``         uint8 ``(z, y, x)`` sub-region codes 0 bg, 1 NCR, 2 ED, 3 ET (labelled cases);
- ``foreground.npy``  int32 ``(N, 4)`` rows ``(region_index, z, y, x)``: sampled region voxels;
- ``properties.json`` everything needed to undo the preprocessing, written last.

Every file is written atomically and none holds a timestamp or temporary path, so an interrupted
and rerun case is byte-identical to an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import os
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, NamedTuple

import numpy as np

from mmseg_robust.artifacts import JsonArtifact, require_schema_version
from mmseg_robust.atomic import atomic_output
from mmseg_robust.data.labels import REGIONS
from mmseg_robust.errors import MMRobustError

logger = logging.getLogger(__name__)

IMAGES_FILE = "images.npy"
SEG_FILE = "seg.npy"
FOREGROUND_FILE = "foreground.npy"
PROPERTIES_FILE = "properties.json"
#: Bumped whenever the stored format changes; older cases are then preprocessed again.
PROPERTIES_SCHEMA_VERSION = 1
#: Most voxel locations stored per region (enough for oversampling, small on disk).
MAX_FOREGROUND_SAMPLES = 10000
#: Columns of a foreground row: region index, then the voxel's (z, y, x).
FOREGROUND_COLUMNS = 4
FOREGROUND_DTYPE = np.int32
SEG_DTYPE = np.uint8


class PreprocessedCaseError(MMRobustError):
    """A preprocessed case folder that is missing, incomplete or from another schema."""


@dataclass(frozen=True)
class PreprocessedCaseProperties(JsonArtifact):
    """``properties.json``: where the stored arrays came from and how to map them back.

    Spatial tuples are in array order (z, y, x) except ``itk_geometry``, which is the raw header
    exactly as :class:`~mmseg_robust.data.nifti_io.ImageGeometry` gives it (ITK x, y, z order).
    ``target_spacing`` is the spacing of the stored arrays: the plans' target when the case was
    resampled, else its original spacing. ``crop_box`` holds (start, stop) original voxel indices.
    """

    artifact_kind = "properties"
    artifact_error = PreprocessedCaseError
    missing_hint = "case not preprocessed or interrupted"
    file_name = PROPERTIES_FILE

    case_id: str
    modalities: tuple[str, ...]
    has_label: bool
    label_convention: dict[str, Any]
    original_shape: tuple[int, ...]
    original_spacing: tuple[float, ...]
    itk_geometry: dict[str, tuple]
    crop_box: tuple[tuple[int, int], ...]
    cropped_shape: tuple[int, ...]
    shape_after_resampling: tuple[int, ...]
    target_spacing: tuple[float, ...]
    normalization: dict[str, dict[str, Any]]
    foreground_counts: dict[str, int]
    source_files: dict[str, str]
    preprocessing_signature: dict[str, Any]
    sampling_seed: int = 0
    schema_version: int = PROPERTIES_SCHEMA_VERSION

    @property
    def resampled(self) -> bool:
        return tuple(self.shape_after_resampling) != tuple(self.cropped_shape)

    def to_dict(self) -> dict[str, Any]:
        # Through JSON so tuples become lists: to_dict() equals what from_dict() reads back.
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any],
                  source: str = PROPERTIES_FILE) -> "PreprocessedCaseProperties":
        require_schema_version(data, PROPERTIES_SCHEMA_VERSION, source, "properties", PreprocessedCaseError,
                               "preprocess again")
        try:
            geometry = data["itk_geometry"]
            return cls(**{
                **data,
                "modalities": tuple(data["modalities"]),
                "original_shape": tuple(int(n) for n in data["original_shape"]),
                "original_spacing": tuple(float(s) for s in data["original_spacing"]),
                "itk_geometry": {"size": tuple(int(n) for n in geometry["size"]),
                                 **{k: tuple(float(v) for v in geometry[k])
                                    for k in ("spacing", "origin", "direction")}},
                "crop_box": tuple((int(a), int(b)) for a, b in data["crop_box"]),
                "cropped_shape": tuple(int(n) for n in data["cropped_shape"]),
                "shape_after_resampling": tuple(int(n) for n in data["shape_after_resampling"]),
                "target_spacing": tuple(float(s) for s in data["target_spacing"]),
                "foreground_counts": {k: int(v) for k, v in data["foreground_counts"].items()},
            })
        except (KeyError, TypeError, ValueError) as error:
            raise PreprocessedCaseError(f"{source}: malformed properties ({error})") from None


class PreprocessedCase(NamedTuple):
    """A loaded case; unpacks as ``images, seg, foreground, properties``."""

    images: np.ndarray
    seg: np.ndarray | None
    foreground: np.ndarray
    properties: PreprocessedCaseProperties


def foreground_seed(case_id: str, seed: int, region_index: int) -> list[int]:
    """Seed of a case's foreground sample: from its ID and the global seed, not process order."""
    return [int(seed), zlib.crc32(case_id.encode("utf-8")), int(region_index)]


def sample_foreground(regions: np.ndarray, case_id: str, seed: int = 0,
                      max_samples: int = MAX_FOREGROUND_SAMPLES) -> tuple[np.ndarray, dict[str, int]]:
    """Sample up to ``max_samples`` voxel locations of each region of ``regions`` (bool (R, z, y, x)).

    Returns the ``(N, 4)`` int32 rows ``(region_index, z, y, x)`` sorted by region then location
    (so the bytes do not depend on the sampler's draw order) and each region's full voxel count.
    """
    rows, counts = [], {}
    for index, name in enumerate(REGIONS[: regions.shape[0]]):
        # argwhere lists locations in C order, i.e. already sorted lexicographically.
        locations = np.argwhere(regions[index])
        counts[name] = int(len(locations))
        if len(locations) > max_samples:
            rng = np.random.default_rng(foreground_seed(case_id, seed, index))
            locations = locations[np.sort(rng.choice(len(locations), max_samples, replace=False))]
        region_column = np.full((len(locations), 1), index, dtype=FOREGROUND_DTYPE)
        rows.append(np.hstack([region_column, locations.astype(FOREGROUND_DTYPE)]))
    if not rows:
        return np.zeros((0, FOREGROUND_COLUMNS), dtype=FOREGROUND_DTYPE), counts
    return np.ascontiguousarray(np.vstack(rows), dtype=FOREGROUND_DTYPE), counts


def _save_npy_atomic(path: Path, array: np.ndarray) -> None:
    """``np.save`` into a hidden temporary file beside ``path``, flushed, then renamed onto it."""
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, np.ascontiguousarray(array), allow_pickle=False)
            handle.flush()
            os.fsync(handle.fileno())


def write_preprocessed_case(folder: str | Path, images: np.ndarray, seg: np.ndarray | None,
                            foreground: np.ndarray, properties: PreprocessedCaseProperties) -> Path:
    """Write a case into ``folder``; ``properties.json`` goes last and marks the case finished."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # Drop the old completion marker first: until the new one lands the case counts as unfinished,
    # so a kill half-way never leaves new arrays described by old properties.
    (folder / PROPERTIES_FILE).unlink(missing_ok=True)
    # A worker killed mid-write (SIGKILL skips cleanup) leaves hidden temporaries; only this
    # worker writes this case's folder, so they are safe to remove.
    for stale in folder.glob(".*"):
        if stale.is_file():
            stale.unlink()
    _save_npy_atomic(folder / IMAGES_FILE, images)
    if seg is not None:
        _save_npy_atomic(folder / SEG_FILE, seg.astype(SEG_DTYPE, copy=False))
    else:
        (folder / SEG_FILE).unlink(missing_ok=True)  # a label map from an older run would mislead
    _save_npy_atomic(folder / FOREGROUND_FILE, foreground.astype(FOREGROUND_DTYPE, copy=False))
    properties.save(folder / PROPERTIES_FILE)
    logger.debug("wrote preprocessed case %s to %s", properties.case_id, folder)
    return folder


def read_properties(folder: str | Path) -> PreprocessedCaseProperties:
    """Read ``properties.json`` of a case folder."""
    # The file, not the folder: a missing folder is then reported as the missing properties.json.
    return PreprocessedCaseProperties.load(Path(folder) / PROPERTIES_FILE)


def _canonical_json(value: Any) -> Any:
    """Tuples and lists compare equal after a JSON round trip."""
    return json.loads(json.dumps(value))


def is_finished(folder: str | Path, signature: Mapping[str, Any], seed: int | None = None) -> bool:
    """True if ``folder`` holds a complete case made with ``signature`` (and ``seed`` if given)."""
    folder = Path(folder)
    try:
        properties = read_properties(folder)
    except PreprocessedCaseError:
        return False
    if _canonical_json(properties.preprocessing_signature) != _canonical_json(dict(signature)):
        return False
    if seed is not None and properties.sampling_seed != seed:
        return False
    needed = [IMAGES_FILE, FOREGROUND_FILE] + ([SEG_FILE] if properties.has_label else [])
    return all((folder / name).is_file() for name in needed)


def _load_npy(path: Path, mmap: bool) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except FileNotFoundError:
        raise PreprocessedCaseError(f"{path}: missing (case not preprocessed or interrupted)") from None
    except (OSError, ValueError) as error:
        raise PreprocessedCaseError(f"{path}: unreadable array ({error})") from None


def load_preprocessed_case(folder: str | Path, mmap: bool = True) -> PreprocessedCase:
    """Load a finished case; images and seg are read-only memory maps when ``mmap``."""
    folder = Path(folder)
    properties = read_properties(folder)
    images = _load_npy(folder / IMAGES_FILE, mmap)
    seg = _load_npy(folder / SEG_FILE, mmap) if properties.has_label else None
    foreground = _load_npy(folder / FOREGROUND_FILE, mmap=False)  # small; random access wants RAM
    expected = (len(properties.modalities),) + tuple(properties.shape_after_resampling)
    if tuple(images.shape) != expected:
        raise PreprocessedCaseError(f"{folder / IMAGES_FILE}: shape {tuple(images.shape)}, "
                                    f"properties say {expected}")
    return PreprocessedCase(images, seg, foreground, properties)
