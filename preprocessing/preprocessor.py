"""Preprocess raw cases: crop to the brain, z-score per modality, resample, store (docs/design.md §4.3).

One case is held in memory at a time per worker; finished cases are skipped, so an interrupted
run can simply be started again (docs/design.md §13).
"""

from __future__ import annotations

import logging
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from mmseg_robust.planners.plans import Plans
from mmseg_robust.preprocessing.cropping import crop
from mmseg_robust.preprocessing.normalization import ZSCORE_BRAIN, zscore_in_mask
from mmseg_robust.preprocessing.resampling import (
    compute_new_shape,
    needs_resampling,
    resample_image,
    resample_mask,
    resample_regions,
)
from mmseg_robust.preprocessing.storage import (
    PreprocessedCaseProperties,
    is_finished,
    sample_foreground,
    write_preprocessed_case,
)
from tqdm import tqdm

from mmseg_robust.data.boxes import box_shape, nonzero_bounding_box, union_nonzero_mask
from mmseg_robust.data.case import Case
from mmseg_robust.data.labels import REGIONS, label_to_subregions, regions_to_subregions, subregions_to_regions
from mmseg_robust.data.nifti_io import GEOMETRY_TOLERANCE, ImageGeometry, read_image
from mmseg_robust.errors import MMRobustError

logger = logging.getLogger(__name__)

#: Key of the label file in ``properties.source_files``.
LABEL_KEY = "label"


class PreprocessingError(MMRobustError):
    """A case that cannot be preprocessed; the message names the case and the file or problem."""


@dataclass(frozen=True)
class PreprocessingSummary:
    """What :func:`preprocess_dataset` did: ``case_ids`` lists every case given, in order."""

    n_processed: int
    n_skipped: int
    case_ids: tuple[str, ...]
    processed_ids: tuple[str, ...] = ()


def _geometry_dict(geometry: ImageGeometry) -> dict[str, tuple]:
    return {"size": geometry.size, "spacing": geometry.spacing, "origin": geometry.origin,
            "direction": geometry.direction}


def _read_checked(path: Path, reference: ImageGeometry | None,
                  case_id: str) -> tuple[np.ndarray, ImageGeometry]:
    """Read one file; it must be 3D, finite and on the same grid as the case's first image."""
    array, geometry = read_image(path)
    if array.ndim != 3:
        raise PreprocessingError(f"case {case_id}: {path}: expected a 3D image, got {array.ndim}D")
    if reference is not None:
        problems = reference.mismatches(geometry, GEOMETRY_TOLERANCE)
        if problems:
            raise PreprocessingError(f"case {case_id}: {path}: geometry differs from the case's "
                                     f"first image ({'; '.join(problems)})")
    if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
        raise PreprocessingError(f"case {case_id}: {path}: non-finite (NaN or inf) voxels")
    return array, geometry


def _read_label(case: Case, reference: ImageGeometry) -> np.ndarray:
    """The case's label as sub-region codes (uint8); out-of-convention values name the file."""
    label, _ = _read_checked(case.label, reference, case.case_id)
    try:
        return label_to_subregions(label, case.convention)
    except ValueError as error:
        raise PreprocessingError(f"case {case.case_id}: {case.label}: {error}") from None


@dataclass
class PreparedImages:
    """A case's images as the network sees them, and how to map them back to the input grid.

    ``images`` (C, *shape) float32 in the order of ``modalities``; ``codes`` the cropped (and
    resampled) sub-region codes or None; ``spacing`` the input's array-order spacing.
    """

    images: np.ndarray
    codes: np.ndarray | None
    modalities: tuple[str, ...]
    geometry: ImageGeometry
    spacing: tuple[float, ...]
    crop_box: tuple[tuple[int, int], ...]
    cropped_shape: tuple[int, ...]
    shape: tuple[int, ...]
    resampled: bool
    normalization: dict[str, dict]


def read_case_images(case_id: str, files: Mapping[str, Path],
                     modalities: Sequence[str]) -> tuple[list[np.ndarray], ImageGeometry]:
    """Read ``modalities`` of one case; every file must be 3D, finite and on the first one's grid."""
    raw: list[np.ndarray] = []
    geometry: ImageGeometry | None = None
    for modality in modalities:
        array, read_geometry = _read_checked(files[modality], geometry, case_id)
        geometry = geometry or read_geometry
        raw.append(array)
    assert geometry is not None
    return raw, geometry


def prepare_images(raw: Sequence[np.ndarray], modalities: Sequence[str], geometry: ImageGeometry, plans: Plans,
                   codes_full: np.ndarray | None = None, case_id: str = "") -> PreparedImages:
    """Crop to the brain (and tumour), z-score each modality inside the brain, resample if planned:
    the one code path of training's preprocessing and of inference."""
    # Crop to the union of the brain and the tumour, so no labelled voxel is ever cut away.
    brain_full = union_nonzero_mask(raw)
    box = nonzero_bounding_box(brain_full if codes_full is None else brain_full | (codes_full > 0))
    brain = crop(brain_full, box)
    del brain_full
    images = np.empty((len(modalities),) + box_shape(box), dtype=np.float32)
    normalization = {}
    for channel, (modality, array) in enumerate(zip(modalities, raw)):
        images[channel], mean, std = zscore_in_mask(crop(array, box), brain)
        normalization[modality] = {"scheme": plans.normalization.get(modality, ZSCORE_BRAIN),
                                   "mean": mean, "std": std}
    codes = crop(codes_full, box) if codes_full is not None else None

    spacing = geometry.array_spacing
    cropped_shape = box_shape(box)
    new_shape = cropped_shape
    resampled = plans.resample and needs_resampling(spacing, plans.target_spacing)
    if resampled:
        new_shape = compute_new_shape(cropped_shape, spacing, plans.target_spacing)
        images = resample_image(images, new_shape)
        # Cubic splines ring past the brain edge; the resampled brain mask re-zeroes background.
        images[:, ~resample_mask(brain, new_shape)] = 0
        if codes is not None:
            codes = regions_to_subregions(resample_regions(subregions_to_regions(codes), new_shape))
        logger.debug("case %s resampled %s -> %s", case_id, cropped_shape, new_shape)
    return PreparedImages(images, codes, tuple(modalities), geometry, spacing, box, cropped_shape,
                          tuple(new_shape), resampled, normalization)


def preprocess_case(case: Case, plans: Plans, output_dir: str | Path,
                    seed: int = 0) -> PreprocessedCaseProperties:
    """Preprocess one case into ``output_dir/<case_id>/``; returns its stored properties."""
    modalities = tuple(m for m in case.modalities if m in plans.modalities)
    if not modalities:
        raise PreprocessingError(f"case {case.case_id}: none of the planned modalities "
                                 f"{', '.join(plans.modalities)} is present")
    raw, geometry = read_case_images(case.case_id, case.images, modalities)
    codes_full = _read_label(case, geometry) if case.label is not None else None
    prepared = prepare_images(raw, modalities, geometry, plans, codes_full, case.case_id)
    del raw
    images, codes, new_shape = prepared.images, prepared.codes, prepared.shape

    regions = (subregions_to_regions(codes) if codes is not None
               else np.zeros((len(REGIONS),) + tuple(new_shape), dtype=bool))
    foreground, counts = sample_foreground(regions, case.case_id, seed)
    del regions

    sources = {m: str(case.images[m]) for m in modalities}
    if case.label is not None:
        sources[LABEL_KEY] = str(case.label)
    properties = PreprocessedCaseProperties(
        case_id=case.case_id, modalities=modalities, has_label=codes is not None,
        label_convention=case.convention.to_dict(), original_shape=geometry.array_shape,
        original_spacing=prepared.spacing, itk_geometry=_geometry_dict(geometry), crop_box=prepared.crop_box,
        cropped_shape=prepared.cropped_shape, shape_after_resampling=tuple(new_shape),
        target_spacing=tuple(plans.target_spacing) if prepared.resampled else prepared.spacing,
        normalization=prepared.normalization, foreground_counts=counts, source_files=sources,
        preprocessing_signature=plans.preprocessing_signature(), sampling_seed=seed)
    write_preprocessed_case(Path(output_dir) / case.case_id, images.astype(plans.image_dtype, copy=False),
                            codes, foreground, properties)
    return properties


def _preprocess_one(case: Case, plans: Plans, output_dir: Path, seed: int) -> str:
    """Worker entry: every expected failure becomes one PreprocessingError naming the case."""
    try:
        preprocess_case(case, plans, output_dir, seed)
    except PreprocessingError:
        raise
    except (MMRobustError, OSError, ValueError, MemoryError) as error:
        raise PreprocessingError(f"case {case.case_id}: {error}") from None
    return case.case_id


def preprocess_dataset(cases: Sequence[Case], plans: Plans, output_dir: str | Path, num_processes: int = 1,
                       overwrite: bool = False, seed: int = 0, progress: bool = True) -> PreprocessingSummary:
    """Preprocess ``cases`` into ``output_dir``, skipping finished ones unless ``overwrite``.

    A stored case made with another preprocessing signature (or seed) is stale and is redone.
    With ``num_processes > 1`` cases run in worker processes, one case per worker at a time; the
    stored bytes do not depend on the number of workers. The first failing case stops the run.
    """
    output_dir = Path(output_dir)
    ids = [case.case_id for case in cases]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise PreprocessingError(f"duplicate case IDs {', '.join(duplicates)}: "
                                 f"each case needs its own folder")
    if num_processes < 1:
        raise PreprocessingError(f"number of processes must be at least 1, got {num_processes}")
    signature = plans.preprocessing_signature()
    pending = [c for c in cases if overwrite or not is_finished(output_dir / c.case_id, signature, seed)]
    output_dir.mkdir(parents=True, exist_ok=True)
    logger.info("preprocessing %d case(s) into %s (%d already finished)", len(pending), output_dir,
                len(cases) - len(pending))
    done: list[str] = []
    with tqdm(total=len(pending), desc="preprocess", unit="case", disable=not progress) as bar:
        if num_processes == 1 or len(pending) <= 1:
            for case in pending:
                done.append(_preprocess_one(case, plans, output_dir, seed))
                bar.update()
        else:
            with ProcessPoolExecutor(max_workers=min(num_processes, len(pending))) as pool:
                futures = {pool.submit(_preprocess_one, c, plans, output_dir, seed) for c in pending}
                while futures:
                    finished, futures = wait(futures, return_when=FIRST_COMPLETED)
                    for future in finished:
                        if future.exception() is not None:
                            for other in futures:
                                other.cancel()  # queued cases are dropped; running ones finish
                            raise future.exception()
                        done.append(future.result())
                        bar.update()
    processed = tuple(i for i in ids if i in set(done))  # input order, not completion order
    return PreprocessingSummary(n_processed=len(processed), n_skipped=len(cases) - len(pending),
                                case_ids=tuple(ids), processed_ids=processed)
