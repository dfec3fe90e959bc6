"""Scoring one case's label maps (every subset against one reference) as a picklable job, run
inline or in worker processes so that scoring overlaps the next case's prediction."""

from __future__ import annotations

import multiprocessing
import os
import time
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np
from tqdm import tqdm

from mmseg_robust.data.labels import LabelConvention
from mmseg_robust.data.nifti_io import read_header, read_image
from mmseg_robust.evaluation import DEFAULT_ET_MIN_VOXELS, DEFAULT_LESION_CONVENTION, EvaluationError
from mmseg_robust.evaluation.lesions import lesion_convention
from mmseg_robust.evaluation.scoring import LabelValueError, RegionScore, score_case_label_maps


@dataclass(frozen=True)
class ScoringOptions:
    """How label maps are scored, checked on creation.

    Args:
        et_min_voxels: threshold of the post-processed tables: a predicted ET of fewer voxels is
            relabelled NCR there (0: raw tables only).
        hd95_empty_penalty: HD95 in mm when exactly one mask is empty; None: the image's diagonal
            (373.13 mm for 240x240x155 at 1 mm).
        lesion_convention: the lesion-wise metrics' convention (a name in ``LESION_CONVENTIONS``):
            ``brats2023`` (the 2023 challenge script) or ``brats2024`` (the BraTS package's).

    Raises:
        LesionConventionError: an unknown ``lesion_convention``.
    """

    et_min_voxels: int = DEFAULT_ET_MIN_VOXELS
    hd95_empty_penalty: float | None = None
    lesion_convention: str = DEFAULT_LESION_CONVENTION

    def __post_init__(self) -> None:
        lesion_convention(self.lesion_convention)  # an unknown name fails here, before any work

    @property
    def thresholds(self) -> tuple[int, ...]:
        return (0, self.et_min_voxels) if self.et_min_voxels > 0 else (0,)


@dataclass(frozen=True)
class ScoringJob:
    """One case: its reference and its label map under each subset (name, path)."""

    case_id: str
    reference: Path
    reference_convention: LabelConvention
    predictions: tuple[tuple[str, Path], ...]
    prediction_convention: LabelConvention
    options: ScoringOptions
    #: Label maps already in memory, by subset (the files hold the same voxels): scoring in the
    #: main process right after prediction need not read back what it just wrote.
    in_memory: Mapping[str, np.ndarray] | None = None


def score_case(job: ScoringJob, threads: int = 1) -> tuple[list[RegionScore], float]:
    """Scores of every subset of the case, and the seconds it took (``threads``: regions scored at
    once); one-line errors name the file."""
    started = time.perf_counter()
    reference, reference_geometry = read_image(job.reference)
    maps = []
    for subset, path in job.predictions:
        if job.in_memory is not None and subset in job.in_memory:
            label, geometry = job.in_memory[subset], read_header(path).geometry
        else:
            label, geometry = read_image(path)
        problems = geometry.mismatches(reference_geometry)
        if problems:
            raise EvaluationError(f"{path}: geometry differs from case {job.case_id}'s reference "
                                  f"{job.reference} ({'; '.join(problems)})")
        maps.append((subset, label))
    try:
        scores = score_case_label_maps(job.case_id, maps, job.prediction_convention, reference,
                                       job.reference_convention, reference_geometry.array_spacing,
                                       job.options.thresholds, job.options.hd95_empty_penalty,
                                       lesion_convention(job.options.lesion_convention), threads)
    except LabelValueError as error:
        path = job.reference if error.which == "reference" else dict(job.predictions)[error.which]
        raise EvaluationError(f"{path}: {error}") from None
    return scores, time.perf_counter() - started


class CaseScorer:
    """Runs :func:`score_case` jobs in ``processes`` spawned workers (0: inline, in the caller).

    Spawned rather than forked: the parent holds torch's thread pools, which a fork copies in an
    undefined state. Results come back in submission order.
    """

    def __init__(self, processes: int = 0) -> None:
        self._executor = (ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn"))
                          if processes > 0 else None)
        self._pending: list[Future | tuple[list[RegionScore], float]] = []

    @property
    def inline(self) -> bool:
        """Whether jobs run in the caller (and may carry label maps in memory)."""
        return self._executor is None

    def submit(self, job: ScoringJob) -> None:
        # Inline, nothing else runs meanwhile: every core may score (the workers get one each).
        self._pending.append(self._executor.submit(score_case, job) if self._executor
                             else score_case(job, os.cpu_count() or 1))

    def results(self, progress: bool = False) -> tuple[list[RegionScore], float]:
        """Every job's scores in order, and the seconds spent scoring (summed over the workers)."""
        scores, seconds = [], 0.0
        for item in tqdm(self._pending, desc="score", unit="case", disable=not progress or len(self._pending) < 2):
            case_scores, case_seconds = item.result() if isinstance(item, Future) else item
            scores += case_scores
            seconds += case_seconds
        self._pending = []
        return scores, seconds

    def __enter__(self) -> "CaseScorer":
        return self

    def __exit__(self, *exc_info) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
