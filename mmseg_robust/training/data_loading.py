"""Patch sampling from preprocessed cases: training batches and a fixed validation set (docs/design.md §4, §7).

Batch format (a dict of torch tensors; the strategies' :class:`~mmseg_robust.multimodal.MultimodalBatch`
plus case IDs), for ``B`` samples, ``M = len(settings.modalities)``:

- ``"inputs"``    float32 ``(B, M, *patch)``, channels in ``settings.modalities`` order; a modality the
  case lacks is all zeros;
- ``"available"`` bool ``(B, M)``, which modalities the case has;
- ``"target"``    float32 ``(B, 3, *patch)``, the regions WT, TC, ET;
- ``"case_ids"``  list of ``B`` case IDs.

Sampling (nnU-Net's rules):

- each sample picks a case uniformly at random;
- the last ``ceil(B * oversample_foreground)`` samples of every batch are *foreground* samples: a
  region that has stored voxels is chosen at random, then one of its stored locations, and the patch
  is centred on it (a case without foreground falls back to a random patch). Note that with
  ``B == 1`` and ``0 < oversample_foreground`` every sample is a foreground sample;
- the other samples take a uniformly random patch position such that the patch lies inside the
  volume along every axis where it fits, and contains the volume along every axis where it does not;
- whatever the patch reaches outside the volume is zero (images and target);
- 2D (``len(patch_size) == 2``): an axial slice ``z`` is chosen first (the foreground location's slice
  for foreground samples, else uniformly), then the 2D patch in ``(y, x)``.

Determinism: batch ``index`` is a pure function of ``(settings.seed, rank, index)``. Its own choices
come from ``numpy.random.default_rng(SeedSequence([seed, rank, index]))``; the same Generator yields
the seed of numpy's legacy global RNG (and Python's ``random``) under which batchgenerators runs
(:func:`~mmseg_robust.training.augmentation.seeded_global_rngs`, which restores the caller's global
states afterwards). So the batch does not depend on which process or DataLoader worker computes it,
and ``make_training_loader(start_batch=k)`` continues exactly where an uninterrupted loader would be.

Cases are opened memory-mapped, lazily and once per process (DataLoader workers open their own).
"""

from __future__ import annotations

import math
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, NamedTuple, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from mmseg_robust.data.labels import REGIONS, subregions_to_regions
from mmseg_robust.data.modalities import MODALITIES
from mmseg_robust.errors import MMRobustError
from mmseg_robust.preprocessing.storage import PreprocessedCaseError, load_preprocessed_case, read_properties
from mmseg_robust.training.augmentation import Augmenter, trimmed_read_box

#: ``len(TrainingBatches)``: training is driven by an iteration count, never by exhausting the set.
NUM_BATCHES = 2**62
#: Extra SeedSequence word that separates the validation patches' stream from the training stream.
VALIDATION_STREAM = 0x56414C
#: Default fraction of foreground-centred samples per batch (nnU-Net: 33%).
DEFAULT_OVERSAMPLE_FOREGROUND = 0.33
#: Worker processes prefetch this many batches each.
PREFETCH_FACTOR = 2


class DataLoadingError(MMRobustError):
    """Case folders or loader settings that cannot produce training batches."""


@dataclass(frozen=True)
class LoaderSettings:
    """What the patch sampler needs; ``spatial_dims = len(patch_size)`` (3: z, y, x; 2: y, x)."""

    patch_size: tuple[int, ...]
    batch_size: int
    modalities: tuple[str, ...]
    oversample_foreground: float = DEFAULT_OVERSAMPLE_FOREGROUND
    augment: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "patch_size", tuple(int(p) for p in self.patch_size))
        object.__setattr__(self, "modalities", tuple(self.modalities))
        if len(self.patch_size) not in (2, 3) or min(self.patch_size) < 1:
            raise DataLoadingError(f"patch size must be 2 or 3 positive sizes, got {self.patch_size}")
        if int(self.batch_size) < 1:
            raise DataLoadingError(f"batch size must be at least 1, got {self.batch_size}")
        unknown = [m for m in self.modalities if m not in MODALITIES]
        if not self.modalities or unknown or len(set(self.modalities)) != len(self.modalities):
            raise DataLoadingError(f"modalities must be distinct canonical names ({', '.join(MODALITIES)}), "
                                   f"got {self.modalities}")
        if not 0.0 <= float(self.oversample_foreground) <= 1.0:
            raise DataLoadingError(f"oversample_foreground must lie in [0, 1], got {self.oversample_foreground}")
        if int(self.seed) < 0:
            raise DataLoadingError(f"seed must be non-negative, got {self.seed}")

    @property
    def spatial_dims(self) -> int:
        return len(self.patch_size)


def forced_foreground_count(batch_size: int, fraction: float) -> int:
    """How many samples (the last ones) of a batch are foreground-centred: ``ceil(B * fraction)``."""
    # The epsilon keeps 3 * 0.33333 (meant as one third) from rounding up to 2.
    return min(batch_size, max(0, math.ceil(batch_size * fraction - 1e-9)))


# --- cases ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _CaseInfo:
    """What is known about a case without opening its arrays (picklable, cheap)."""

    folder: Path
    case_id: str
    shape: tuple[int, int, int]
    channels: tuple[int | None, ...]  # model channel -> stored channel (None: the case lacks it)

    @property
    def available(self) -> np.ndarray:
        return np.array([c is not None for c in self.channels], dtype=bool)


class _OpenCase(NamedTuple):
    images: np.ndarray          # (C, z, y, x) memory map
    seg: np.ndarray             # (z, y, x) memory map
    foreground: np.ndarray      # (N, 4) rows (region, z, y, x)
    region_rows: tuple[np.ndarray, ...]  # row indices of each region that has stored voxels


def _inspect_cases(case_folders: Sequence[Path | str], modalities: tuple[str, ...]) -> tuple[_CaseInfo, ...]:
    if len(case_folders) == 0:
        raise DataLoadingError("no case folders given")
    infos = []
    for folder in map(Path, case_folders):
        properties = read_properties(folder)
        if not properties.has_label:
            raise DataLoadingError(f"{folder}: case {properties.case_id} has no label map; "
                                   f"training and validation need labelled cases")
        channels = tuple(properties.modalities.index(m) if m in properties.modalities else None
                         for m in modalities)
        if all(c is None for c in channels):
            raise DataLoadingError(f"{folder}: case {properties.case_id} has none of the modalities "
                                   f"{', '.join(modalities)} (it has {', '.join(properties.modalities)})")
        shape = tuple(int(n) for n in properties.shape_after_resampling)
        if len(shape) != 3:
            raise DataLoadingError(f"{folder}: expected a 3D case, stored shape is {shape}")
        infos.append(_CaseInfo(folder, properties.case_id, shape, channels))  # type: ignore[arg-type]
    return tuple(infos)


class _CaseCache:
    """Opens cases memory-mapped on first use, once per process (a forked or spawned worker starts
    with an empty cache and opens its own maps)."""

    def __init__(self, infos: Sequence[_CaseInfo]):
        self.infos = tuple(infos)
        self._pid = os.getpid()
        self._open: dict[int, _OpenCase] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {"infos": self.infos}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.infos = state["infos"]
        self._pid = os.getpid()
        self._open = {}

    def __len__(self) -> int:
        return len(self.infos)

    def get(self, index: int) -> _OpenCase:
        if self._pid != os.getpid():  # forked with the parent's maps: reopen here
            self._pid, self._open = os.getpid(), {}
        case = self._open.get(index)
        if case is None:
            info = self.infos[index]
            images, seg, foreground, _ = load_preprocessed_case(info.folder, mmap=True)
            if seg is None or tuple(seg.shape) != info.shape or tuple(images.shape[1:]) != info.shape:
                raise PreprocessedCaseError(f"{info.folder}: arrays changed since the loader was built")
            foreground = np.asarray(foreground).reshape(-1, 4)
            region_rows = tuple(rows for rows in (np.flatnonzero(foreground[:, 0] == r)
                                                  for r in range(len(REGIONS))) if len(rows))
            case = _OpenCase(images, seg, foreground, region_rows)
            self._open[index] = case
        return case


# --- patch geometry -------------------------------------------------------------------------------

class _PatchLocation(NamedTuple):
    """Where a sample's patch lies: ``start`` of the patch along its spatial axes (3: z, y, x;
    2: y, x) and, for 2D, the axial slice ``z``."""

    case_index: int
    start: tuple[int, ...]
    z: int | None


def _random_start(rng: np.random.Generator, shape: Sequence[int], patch: Sequence[int]) -> tuple[int, ...]:
    """Uniform start: patch inside the volume where it fits, containing it where it does not."""
    return tuple(int(rng.integers(min(0, s - p), max(0, s - p) + 1)) for s, p in zip(shape, patch))


def _foreground_voxel(rng: np.random.Generator, case: _OpenCase) -> np.ndarray | None:
    """A random stored location (z, y, x) of a random region with voxels, or None."""
    if not case.region_rows:
        return None
    rows = case.region_rows[int(rng.integers(len(case.region_rows)))]
    return case.foreground[rows[int(rng.integers(len(rows)))], 1:]


def _sample_location(rng: np.random.Generator, case_index: int, info: _CaseInfo, case: _OpenCase,
                     patch: tuple[int, ...], foreground: bool) -> _PatchLocation:
    voxel = _foreground_voxel(rng, case) if foreground else None
    if len(patch) == 3:
        if voxel is not None:
            return _PatchLocation(case_index, tuple(int(c) - p // 2 for c, p in zip(voxel, patch)), None)
        return _PatchLocation(case_index, _random_start(rng, info.shape, patch), None)
    if voxel is not None:
        return _PatchLocation(case_index, tuple(int(c) - p // 2 for c, p in zip(voxel[1:], patch)),
                              int(voxel[0]))
    z = int(rng.integers(info.shape[0]))
    return _PatchLocation(case_index, _random_start(rng, info.shape[1:], patch), z)


def _crop_box(start: Sequence[int], size: Sequence[int],
              shape: Sequence[int]) -> tuple[tuple[slice, ...], tuple[slice, ...]] | None:
    """Source and destination slices of the part of the box that lies inside ``shape``."""
    source, destination = [], []
    for s, n, dim in zip(start, size, shape):
        low, high = max(s, 0), min(s + n, dim)
        if high <= low:
            return None
        source.append(slice(low, high))
        destination.append(slice(low - s, high - s))
    return tuple(source), tuple(destination)


def read_patch(info: _CaseInfo, case: _OpenCase, location: _PatchLocation,
               size: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Images float32 ``(M, *size)`` (model channel order, zeros where absent or outside) and
    sub-region codes uint8 ``(*size)`` of the box ``location.start`` + ``size``."""
    size = tuple(size)
    images = np.zeros((len(info.channels),) + size, dtype=np.float32)
    codes = np.zeros(size, dtype=np.uint8)
    if location.z is None:
        stored_images, stored_seg = case.images, case.seg
    else:
        stored_images, stored_seg = case.images[:, location.z], case.seg[location.z]
    box = _crop_box(location.start, size, stored_seg.shape)
    if box is None:
        return images, codes
    source, destination = box
    for channel, stored in enumerate(info.channels):
        if stored is not None:
            images[(channel,) + destination] = stored_images[(stored,) + source]
    codes[destination] = stored_seg[source]
    return images, codes


def _make_batch(infos: Sequence[_CaseInfo], images: np.ndarray, codes: np.ndarray,
                locations: Sequence[_PatchLocation]) -> dict[str, Any]:
    regions = np.stack([subregions_to_regions(c) for c in codes]).astype(np.float32)
    available = np.stack([infos[loc.case_index].available for loc in locations])
    images[~available] = 0.0
    return {"inputs": torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)),
            "available": torch.from_numpy(available),
            "target": torch.from_numpy(regions),
            "case_ids": [infos[loc.case_index].case_id for loc in locations]}


# --- training -------------------------------------------------------------------------------------

class TrainingBatches(Dataset):
    """Map-style dataset whose item ``i`` is the ``i``-th whole training batch (see the module notes).

    ``__getitem__`` is a pure function of ``(settings.seed, rank, index)``.
    """

    def __init__(self, case_folders: Sequence[Path], settings: LoaderSettings, rank: int = 0):
        if int(rank) < 0:
            raise DataLoadingError(f"rank must be non-negative, got {rank}")
        self.settings = settings
        self.rank = int(rank)
        self.cases = _CaseCache(_inspect_cases(list(case_folders), settings.modalities))
        self.augmenter = Augmenter(settings.patch_size) if settings.augment else None
        self.n_forced = forced_foreground_count(settings.batch_size, settings.oversample_foreground)

    @property
    def case_ids(self) -> tuple[str, ...]:
        return tuple(info.case_id for info in self.cases.infos)

    @property
    def read_size(self) -> tuple[int, ...]:
        """Size of the region read per sample: the extended patch when augmenting, else the patch."""
        return self.augmenter.input_size if self.augmenter is not None else self.settings.patch_size

    def __len__(self) -> int:
        return NUM_BATCHES

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = int(index)
        if not 0 <= index < NUM_BATCHES:
            raise IndexError(f"batch index {index} out of range")
        settings = self.settings
        rng = np.random.default_rng(np.random.SeedSequence([settings.seed, self.rank, index]))
        patch, read_size = settings.patch_size, self.read_size
        offset = tuple((r - p) // 2 for r, p in zip(read_size, patch))  # patch centred in the read box
        batch_size = settings.batch_size
        locations, images, codes = [], [], []
        for sample in range(batch_size):
            case_index = int(rng.integers(len(self.cases)))
            info, case = self.cases.infos[case_index], self.cases.get(case_index)
            foreground = sample >= batch_size - self.n_forced
            location = _sample_location(rng, case_index, info, case, patch, foreground)
            locations.append(location)
            start, size = tuple(s - o for s, o in zip(location.start, offset)), read_size
            if self.augmenter is not None:
                volume = info.shape if location.z is None else info.shape[1:]
                start, size = trimmed_read_box(start, size, volume, patch)
            sample_images, sample_codes = read_patch(info, case, location._replace(start=start), size)
            images.append(sample_images)
            codes.append(sample_codes)
        if self.augmenter is None:
            images_array, codes_array = np.stack(images), np.stack(codes)
        else:
            available = np.stack([self.cases.infos[loc.case_index].available for loc in locations])
            augmentation_seed = int(rng.integers(2**32))
            images_array, codes_array = self.augmenter(images, codes, available, augmentation_seed)
        return _make_batch(self.cases.infos, images_array, codes_array, locations)


def _forever(loader: DataLoader) -> Iterator[dict[str, Any]]:
    while True:  # the sampler spans NUM_BATCHES indices, so this loops once in practice
        yield from loader


def make_training_loader(case_folders: Sequence[Path], settings: LoaderSettings, num_workers: int,
                         start_batch: int = 0, rank: int = 0, *,
                         pin_memory: bool | None = None) -> Iterator[dict[str, Any]]:
    """Endless iterator of training batches ``start_batch, start_batch + 1, ...``.

    A torch DataLoader (``batch_size=None``) over :class:`TrainingBatches`, so batch ``k`` is the same
    whether it comes from a fresh loader or one resumed with ``start_batch <= k``, and whatever the
    number of workers (0: batches are made in the calling process). Workers are persistent;
    ``pin_memory`` defaults to whether CUDA is available.
    """
    if num_workers < 0:
        raise DataLoadingError(f"number of workers must be non-negative, got {num_workers}")
    if not 0 <= start_batch < NUM_BATCHES:
        raise DataLoadingError(f"start batch must lie in [0, {NUM_BATCHES}), got {start_batch}")
    dataset = TrainingBatches(case_folders, settings, rank)
    loader = DataLoader(dataset, batch_size=None, sampler=range(int(start_batch), NUM_BATCHES),
                        num_workers=num_workers, persistent_workers=num_workers > 0,
                        pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
                        prefetch_factor=PREFETCH_FACTOR if num_workers > 0 else None)
    return _forever(loader)


# --- validation -----------------------------------------------------------------------------------

def validation_seed(seed: int, case_id: str) -> list[int]:
    """SeedSequence entropy of a case's validation patches: by case ID, not by position in the list."""
    return [int(seed), VALIDATION_STREAM, zlib.crc32(case_id.encode("utf-8"))]


def make_validation_batches(case_folders: Sequence[Path], settings: LoaderSettings,
                            patches_per_case: int = 2) -> list[dict[str, Any]]:
    """A fixed validation set: ``patches_per_case`` patches per case, the first ``ceil(n / 2)`` centred on
    a stored foreground voxel (a random patch if the case has none), the rest random; no augmentation.

    Patches are seeded per case (settings.seed and the case ID), so every call returns the same
    batches; they are grouped in case order into batches of ``settings.batch_size`` (the last one may
    be smaller).
    """
    if patches_per_case < 1:
        raise DataLoadingError(f"patches per case must be at least 1, got {patches_per_case}")
    cases = _CaseCache(_inspect_cases(list(case_folders), settings.modalities))
    n_foreground = (patches_per_case + 1) // 2
    locations, images, codes = [], [], []
    for case_index, info in enumerate(cases.infos):
        case = cases.get(case_index)
        rng = np.random.default_rng(np.random.SeedSequence(validation_seed(settings.seed, info.case_id)))
        for patch_index in range(patches_per_case):
            location = _sample_location(rng, case_index, info, case, settings.patch_size,
                                        foreground=patch_index < n_foreground)
            sample_images, sample_codes = read_patch(info, case, location, settings.patch_size)
            locations.append(location)
            images.append(sample_images)
            codes.append(sample_codes)
    batches = []
    for first in range(0, len(locations), settings.batch_size):
        chunk = slice(first, first + settings.batch_size)
        batches.append(_make_batch(cases.infos, np.stack(images[chunk]), np.stack(codes[chunk]),
                                   locations[chunk]))
    return batches
