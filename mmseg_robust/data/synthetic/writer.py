"""Write a synthetic BraTS-like dataset in any supported raw layout (docs/design.md §11)."""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mmseg_robust.atomic import write_json_atomic
from mmseg_robust.data.labels import LABEL_4, NNUNET_BRATS, RC_LABEL_NAME, LabelConvention, state_label_4
from mmseg_robust.data.layouts import (
    CASE_FOLDER_LAYOUTS,
    LAYOUT_NAMES,
    NNUNET_BRATS_CHANNEL_NAMES,
    NNUNET_BRATS_LABELS,
    CaseFolderLayout,
    NnUNetLayout,
)
from mmseg_robust.data.modalities import MODALITIES, canonical_modality
from mmseg_robust.data.nifti_io import ImageGeometry, write_image_atomic
from mmseg_robust.data.synthetic.contrasts import CORE_CONTRASTS, CoreContrastError, check_core_beta
from mmseg_robust.data.synthetic.phantom import RC_LABEL, make_phantom
from mmseg_robust.errors import MMRobustError

logger = logging.getLogger(__name__)

#: Hidden file recording how a synthetic dataset was made; its presence marks a folder as ours.
MARKER_NAME = ".mmrobust_synthetic.json"
#: Bumped whenever the generator's output for a given spec changes.
GENERATOR_VERSION = 1
#: Every LGG_PERIOD-th case is low grade (BraTS 2018: 75 of 285 cases, about a quarter).
LGG_PERIOD = 4
#: Smallest grid: below about 32 mm a side the phantom has no room for a tumour in white matter.
MIN_VOXELS = 16
MIN_EXTENT_MM = 32.0

CASE_ID_FORMATS: dict[str, str] = {
    "brats2018": "Brats18_SYN_{index:04d}_1",
    "brats2021": "BraTS2021_{index:05d}",
    "brats2023": "BraTS-GLI-{index:05d}-000",
    "nnunet": "BraTS2021_{index:05d}",
}
#: Layouts whose label convention can hold a resection cavity (BraTS 2018-2021 names: 4 is ET).
POST_TREATMENT_LAYOUTS: tuple[str, ...] = ("brats2023", "nnunet")


class SyntheticDatasetError(MMRobustError):
    """The output folder cannot take the synthetic dataset."""


@dataclass(frozen=True)
class SyntheticSpec:
    """Everything that determines a synthetic dataset's bytes, checked on creation.

    Shape and spacing are in array order (D, H, W), i.e. (z, y, x): BraTS's 240x240x155 grid is
    ``shape=(155, 240, 240)``. The spec is recorded in the dataset folder, which is how
    :func:`make_synthetic_dataset` recognises a folder it made and whether it made it with this spec.

    Args:
        layout: the raw layout to write: ``brats2018``, ``brats2021``, ``brats2023`` or ``nnunet``.
        n_cases: number of cases, at least 1; every fourth case is low grade (no enhancing tumour).
        shape: voxels per axis, (D, H, W), each at least 16.
        spacing: voxel size in mm, (D, H, W); ``shape`` x ``spacing`` must span at least 32 mm per
            axis, room for a brain with a tumour.
        seed: the same seed gives the same bytes; a case's content does not depend on ``n_cases``.
        incomplete_fraction: fraction of the cases, in [0, 1], that lack one randomly chosen
            sequence (``round(fraction * n_cases)`` cases).
        core_contrast: ``all-sequences`` (realistic contrasts, the default), ``t1ce-only`` (only
            T1ce shows the tumour core) or ``graded`` (FLAIR, T2 and T1 show it at a fraction beta
            of T1ce's contrast-to-noise ratio).
        core_beta: ``graded``'s beta in [0, 1] per weak sequence (``flair``, ``t2``, ``t1``); None:
            the defaults, filled in so that the folder records them. Only with ``graded``.
        post_treatment: BraTS 2024 GLI post-treatment labels: a resection cavity (label 4, ET 3)
            beside each tumour; needs ``layout`` ``brats2023`` or ``nnunet``.
        generator_version: the generator that wrote the data; leave the default, the current one.

    Raises:
        SyntheticDatasetError: an unknown layout or core contrast, fewer than one case, a shape or
            spacing too small, a beta or incomplete fraction out of range, a beta without
            ``graded``, or ``post_treatment`` with a layout whose label 4 is enhancing tumour.
    """

    layout: str
    n_cases: int
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    seed: int = 0
    incomplete_fraction: float = 0.0
    core_contrast: str = CORE_CONTRASTS[0]
    #: ``graded``'s beta per weak sequence (None: the defaults; filled in so the marker records them).
    core_beta: dict[str, float] | None = None
    #: BraTS 2024 GLI post-treatment labels: a resection cavity (4) beside the tumour.
    post_treatment: bool = False
    generator_version: int = GENERATOR_VERSION

    def __post_init__(self) -> None:
        if self.layout not in LAYOUT_NAMES:
            raise SyntheticDatasetError(f"unknown layout {self.layout!r} (one of {', '.join(LAYOUT_NAMES)})")
        if self.n_cases < 1:
            raise SyntheticDatasetError(f"--cases must be at least 1, got {self.n_cases}")
        if len(self.shape) != 3 or min(self.shape) < MIN_VOXELS:
            raise SyntheticDatasetError(
                f"--shape must be three sizes of at least {MIN_VOXELS} voxels, got {self.shape}")
        if len(self.spacing) != 3 or min(self.spacing) <= 0:
            raise SyntheticDatasetError(f"--spacing must be three positive values, got {self.spacing}")
        extent = tuple(n * s for n, s in zip(self.shape, self.spacing))
        if min(extent) < MIN_EXTENT_MM:
            raise SyntheticDatasetError(f"--shape x --spacing spans {extent} mm; every axis needs at least "
                                        f"{MIN_EXTENT_MM:g} mm to hold a brain with a tumour")
        if self.core_contrast not in CORE_CONTRASTS:
            raise SyntheticDatasetError(f"--core-contrast {self.core_contrast!r}: one of {', '.join(CORE_CONTRASTS)}")
        try:
            object.__setattr__(self, "core_beta", check_core_beta(self.core_contrast, self.core_beta))
        except CoreContrastError as error:
            raise SyntheticDatasetError(str(error)) from None
        if not 0.0 <= self.incomplete_fraction <= 1.0:
            raise SyntheticDatasetError(
                f"--incomplete-fraction must lie in [0, 1], got {self.incomplete_fraction}")
        if self.post_treatment and self.layout not in POST_TREATMENT_LAYOUTS:
            raise SyntheticDatasetError(
                f"--post-treatment needs --layout {' or '.join(POST_TREATMENT_LAYOUTS)} (in {self.layout} "
                f"names label 4 is enhancing tumour, not the resection cavity)")

    def to_dict(self) -> dict:
        """Without ``post_treatment`` when False, so markers of plain datasets keep their bytes."""
        data = asdict(self)
        if not self.post_treatment:
            del data["post_treatment"]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "SyntheticSpec":
        return cls(**{**data, "shape": tuple(data["shape"]), "spacing": tuple(data["spacing"])})


def synthetic_layout(name: str, post_treatment: bool = False) -> CaseFolderLayout | NnUNetLayout:
    """The layout object the writer uses for ``name`` (nnU-Net: its BraTS channel order), with label
    4 the resection cavity if ``post_treatment`` (BraTS 2024 GLI in BraTS 2023+ names)."""
    if name == "nnunet":
        channels = {canonical_modality(v): int(k) for k, v in NNUNET_BRATS_CHANNEL_NAMES.items()}
        layout: CaseFolderLayout | NnUNetLayout = NnUNetLayout(convention=NNUNET_BRATS, channels=channels)
    else:
        layout = CASE_FOLDER_LAYOUTS[name]
    if post_treatment:
        layout = replace(layout, convention=state_label_4(layout.convention, "rc", f"--layout {name}"))
    return layout


def case_geometry(spec: SyntheticSpec) -> ImageGeometry:
    """BraTS-like header: LPS-identity direction with BraTS's origin, so the NIfTI affine is
    diag(-sx, -sy, sz) with a translation, not the identity."""
    size = tuple(int(s) for s in reversed(spec.shape))
    spacing = tuple(float(s) for s in reversed(spec.spacing))
    origin = (0.0, -(size[1] - 1) * spacing[1], 0.0)
    return ImageGeometry(size=size, spacing=spacing, origin=origin,
                         direction=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))


def incomplete_cases(spec: SyntheticSpec) -> dict[int, str]:
    """Case index -> the modality it lacks; exactly round(fraction * n) cases, chosen by the seed."""
    n_incomplete = int(round(spec.incomplete_fraction * spec.n_cases))
    chooser = np.random.default_rng([spec.seed, spec.n_cases])
    chosen = sorted(int(i) for i in chooser.choice(spec.n_cases, n_incomplete, replace=False))
    return {i: MODALITIES[int(np.random.default_rng([spec.seed, i, 1]).integers(len(MODALITIES)))]
            for i in chosen}


def _relabel(label: np.ndarray, convention: LabelConvention) -> np.ndarray:
    """Phantoms use BraTS 2018 values (1 NCR, 2 ED, 4 ET) and RC_LABEL for a resection cavity; map
    them to ``convention``."""
    lookup = np.zeros(RC_LABEL + 1, dtype=np.uint8)
    lookup[1], lookup[2], lookup[4] = convention.ncr, convention.edema, convention.et
    lookup[RC_LABEL] = convention.rc or 0
    return lookup[label]


def _write_case(index: int, missing: str | None, spec: SyntheticSpec, root: Path) -> str:
    layout = synthetic_layout(spec.layout, spec.post_treatment)
    case_id = CASE_ID_FORMATS[spec.layout].format(index=index + 1)
    grade = "LGG" if index % LGG_PERIOD == LGG_PERIOD - 1 else "HGG"
    # The case's own seed: its content does not depend on how many cases are generated.
    rng = np.random.default_rng(np.random.SeedSequence(spec.seed, spawn_key=(index,)))
    phantom = make_phantom(spec.shape, spec.spacing, rng, grade, spec.core_contrast, spec.core_beta,
                           spec.post_treatment)
    geometry = case_geometry(spec)
    group = grade if isinstance(layout, CaseFolderLayout) and layout.grouped else None
    for modality in MODALITIES:
        if modality != missing:
            write_image_atomic(phantom.images[modality], geometry,
                               layout.image_path(root, case_id, modality, group))
    write_image_atomic(_relabel(phantom.label, layout.convention), geometry,
                       layout.label_path(root, case_id, group))
    return case_id


def _check_output(output: Path, spec: SyntheticSpec, overwrite: bool) -> bool:
    """True if ``output`` already holds exactly this dataset; raise if it must not be touched."""
    if not output.exists():
        return False
    if not output.is_dir():
        raise SyntheticDatasetError(f"{output}: exists and is not a folder")
    marker = output / MARKER_NAME
    if not marker.is_file():
        if any(output.iterdir()):
            raise SyntheticDatasetError(f"{output}: folder is not empty and was not made by "
                                        f"make-synthetic; refusing to write into it")
        return False
    try:
        existing = SyntheticSpec.from_dict(json.loads(marker.read_text()))
    except (ValueError, TypeError, KeyError):
        existing = None
    if existing == spec:
        return True
    if not overwrite:
        raise SyntheticDatasetError(f"{output}: holds a synthetic dataset made with other parameters; "
                                    f"pass --overwrite to replace it")
    return False


def make_synthetic_dataset(output: str | Path, spec: SyntheticSpec, overwrite: bool = False,
                           num_processes: int = 1, progress: bool = True) -> Path:
    """Generate ``spec`` into ``output``; returns ``output``.

    The dataset is built in a hidden sibling folder and renamed into place, so ``output`` holds
    either nothing, the previous dataset, or the complete new one. Rerunning with the same spec is a
    no-op; a folder not made by this function is never overwritten.

    Args:
        output: the dataset folder; created with its parents, or replaced as a whole.
        spec: what to generate.
        overwrite: replace a dataset this function made with another spec (without it, that is an
            error); a folder it did not make is never written to either way.
        num_processes: cases written at a time, in worker processes when above 1; the bytes do not
            depend on it.
        progress: show a progress bar.

    Returns:
        ``output`` as a :class:`~pathlib.Path`.

    Raises:
        SyntheticDatasetError: ``output`` is a file, a non-empty folder this function did not make,
            or a dataset of another spec and ``overwrite`` is False.
        DiskFullError: the disk filled up; ``output`` is left as it was.
    """
    output = Path(output)
    if _check_output(output, spec, overwrite):
        logger.info("%s already holds this synthetic dataset; nothing to do", output)
        return output
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.partial-", dir=output.parent))
    try:
        missing = incomplete_cases(spec)
        write = partial(_write_case, spec=spec, root=staging)
        indices = list(range(spec.n_cases))
        bar = partial(tqdm, total=spec.n_cases, desc="make-synthetic", unit="case", disable=not progress)
        if num_processes > 1:
            with ProcessPoolExecutor(num_processes) as pool:
                list(bar(pool.map(write, indices, [missing.get(i) for i in indices])))
        else:
            list(bar(write(i, missing.get(i)) for i in indices))
        if spec.layout == "nnunet":
            write_json_atomic(staging / "dataset.json", _nnunet_dataset_json(spec))
        write_json_atomic(staging / MARKER_NAME, spec.to_dict())
        _swap_into_place(staging, output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return output


def _nnunet_dataset_json(spec: SyntheticSpec) -> dict:
    labels = {**NNUNET_BRATS_LABELS, RC_LABEL_NAME: LABEL_4} if spec.post_treatment else NNUNET_BRATS_LABELS
    return {"name": "SyntheticBraTS", "description": "synthetic BraTS-like data from mmrobust make-synthetic",
            "channel_names": NNUNET_BRATS_CHANNEL_NAMES, "labels": labels,
            "regions_class_order": [1, 2, 3], "numTraining": spec.n_cases, "file_ending": ".nii.gz"}


def _swap_into_place(staging: Path, output: Path) -> None:
    if output.exists():
        trash = Path(tempfile.mkdtemp(prefix=f".{output.name}.old-", dir=output.parent))
        output.rename(trash / output.name)
        staging.rename(output)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        staging.rename(output)
