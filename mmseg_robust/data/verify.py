"""Validation of raw cases (docs/design.md §3): files present and readable, 3D, consistent geometry,
finite voxels, label values within the convention, unique case IDs. Read-only."""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Iterator

import numpy as np
from tqdm import tqdm

from mmseg_robust.data.case import Case, Problem
from mmseg_robust.data.discovery import RawDataset
from mmseg_robust.data.nifti_io import ImageGeometry, ImageReadError, read_header, read_image

#: Geometry tolerance (mm for spacing and origin, unitless for direction cosines), docs/design.md §3.
GEOMETRY_TOLERANCE = 1e-3


@dataclass(frozen=True)
class VerificationReport:
    """Outcome of :func:`verify_dataset`: every problem, one per line."""

    dataset: RawDataset
    problems: tuple[Problem, ...]
    n_files: int
    incomplete_cases: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def n_cases(self) -> int:
        return len(self.dataset.cases)

    def summary(self) -> str:
        cases_with_problems = len({p.case_id for p in self.problems if p.case_id})
        incomplete = (f", {len(self.incomplete_cases)} incomplete (allowed)" if self.incomplete_cases else "")
        verdict = ("clean" if self.ok else
                   f"{len(self.problems)} problem(s), {cases_with_problems} case(s) affected")
        return (f"{self.dataset.root} ({self.dataset.layout_name} layout): {self.n_cases} cases, "
                f"{self.n_files} files{incomplete}: {verdict}")


def _check_presence(case: Case, allow_incomplete: bool, require_label: bool) -> Iterator[Problem]:
    if not allow_incomplete:
        for modality in case.missing_modalities:
            expected = case.expected_images.get(modality)
            where = expected if expected is not None else case.expected_label.parent
            yield Problem(where, f"missing {modality} image of case {case.case_id} "
                                 f"(pass --allow-incomplete to train on the modalities it has)")
    if require_label and case.label is None:
        yield Problem(case.expected_label, f"missing segmentation of case {case.case_id}")


def _majority_geometry(headers: list[tuple[Path, ImageGeometry]]) -> tuple[Path, ImageGeometry]:
    """The file whose geometry most others share (first in case order on ties), so that one
    odd file is reported, not every file that disagrees with it."""
    def agreeing(candidate: ImageGeometry) -> int:
        return sum(not candidate.mismatches(g, GEOMETRY_TOLERANCE) for _, g in headers)
    return max(headers, key=lambda item: agreeing(item[1]))


def _check_headers(case: Case) -> tuple[list[Problem], list[Path]]:
    """Check 3D scalar images of one geometry; return problems and the files fit for a voxel read."""
    problems: list[Problem] = []
    headers: list[tuple[Path, ImageGeometry]] = []
    for path in case.files:
        try:
            header = read_header(path)
        except ImageReadError as error:
            problems.append(Problem(path, str(error).removeprefix(f"{path}: ")))
            continue
        if header.geometry.dimension != 3:
            problems.append(Problem(path, f"{header.geometry.dimension}D image of size "
                                          f"{header.geometry.size}, expected a 3D volume"))
        elif header.components != 1:
            problems.append(Problem(path, f"{header.components}-component (vector) image, expected scalar"))
        else:
            headers.append((path, header.geometry))
    if headers:
        reference_path, reference = _majority_geometry(headers)
        for path, geometry in headers:
            for mismatch in reference.mismatches(geometry, GEOMETRY_TOLERANCE):
                problems.append(Problem(path, f"{mismatch} of {reference_path.name}"))
    return problems, [path for path, _ in headers]


def _check_image_voxels(path: Path, array: np.ndarray) -> Iterator[Problem]:
    if np.issubdtype(array.dtype, np.floating):
        n_bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        if n_bad:
            n_nan = int(np.count_nonzero(np.isnan(array)))
            yield Problem(path, f"{n_bad} non-finite voxels ({n_nan} NaN, {n_bad - n_nan} inf)")


def _distinct_values(array: np.ndarray) -> np.ndarray:
    """Distinct values; a bincount for small non-negative integers (labels), several times faster
    than sorting the whole volume."""
    if np.issubdtype(array.dtype, np.integer) and array.size:
        low, high = int(array.min()), int(array.max())
        if low >= 0 and high < 1 << 16:
            return np.flatnonzero(np.bincount(array.ravel(), minlength=high + 1))
    return np.unique(array)


def _check_label_voxels(path: Path, array: np.ndarray, case: Case) -> Iterator[Problem]:
    if np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)):
            yield Problem(path, "non-finite values in the segmentation")
            return
        if np.any(array != np.round(array)):
            yield Problem(path, "non-integer values in the segmentation")
            return
    values = _distinct_values(array)
    allowed = case.convention.allowed_values
    bad = [int(v) for v in values if int(v) not in allowed]
    if bad:
        yield Problem(path, f"label values {bad} outside the {case.convention.name} convention "
                            f"{sorted(allowed)}")


def verify_case(case: Case, allow_incomplete: bool = False, require_label: bool = True) -> list[Problem]:
    """All problems of one case: presence first, then headers, then voxels of readable files."""
    problems = list(_check_presence(case, allow_incomplete, require_label))
    header_problems, readable = _check_headers(case)
    problems += header_problems
    for path in readable:
        try:
            array, _ = read_image(path)
        except ImageReadError as error:
            problems.append(Problem(path, str(error).removeprefix(f"{path}: ")))
            continue
        if path == case.label:
            problems += _check_label_voxels(path, array, case)
        else:
            problems += _check_image_voxels(path, array)
    return [replace(p, case_id=case.case_id) for p in problems]


def verify_dataset(dataset: RawDataset, allow_incomplete: bool = False, require_labels: bool = True,
                   num_processes: int = 1, progress: bool = True) -> VerificationReport:
    """Verify every case of ``dataset`` (in ``num_processes`` worker processes); never writes."""
    check = partial(verify_case, allow_incomplete=allow_incomplete, require_label=require_labels)
    bar = partial(tqdm, total=len(dataset.cases), desc="verify", unit="case", disable=not progress)
    if num_processes > 1:
        with ProcessPoolExecutor(num_processes) as pool:
            per_case = list(bar(pool.map(check, dataset.cases)))
    else:
        per_case = [check(case) for case in bar(dataset.cases)]
    problems = list(dataset.problems) + [p for case_problems in per_case for p in case_problems]
    incomplete = tuple(c.case_id for c in dataset.cases if c.missing_modalities)
    n_files = sum(len(c.files) for c in dataset.cases)
    return VerificationReport(dataset, tuple(problems), n_files,
                              incomplete if allow_incomplete else ())
