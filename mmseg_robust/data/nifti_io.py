"""NIfTI reading and atomic writing through SimpleITK, with the geometry kept explicit.

Arrays are in SimpleITK's numpy order (z, y, x); geometry (size, spacing, origin, direction) is in
ITK's physical (x, y, z) order, exactly as the file's header gives it.
"""

from __future__ import annotations

import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk
from nibabel.filebasedimages import ImageFileError

from mmseg_robust.atomic import atomic_output
from mmseg_robust.errors import MMRobustError

#: File name endings recognised as NIfTI images.
NIFTI_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii")
#: Absolute tolerance under which two geometries count as the same (mm for spacing and origin,
#: unitless for direction cosines; docs/design.md §3): verification, fingerprinting, resampling and
#: preprocessing all compare with this one value.
GEOMETRY_TOLERANCE = 1e-3


class ImageReadError(MMRobustError):
    """A file that is not a readable image (missing, truncated, corrupt)."""


@dataclass(frozen=True)
class ImageGeometry:
    """Voxel grid of an image in ITK (x, y, z) order; direction is the row-major 3x3 matrix."""

    size: tuple[int, ...]
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]

    @property
    def dimension(self) -> int:
        return len(self.size)

    @property
    def array_shape(self) -> tuple[int, ...]:
        """Shape of the numpy array SimpleITK gives for this grid (reversed axes)."""
        return tuple(reversed(self.size))

    @property
    def array_spacing(self) -> tuple[float, ...]:
        """Spacing in the array's (z, y, x) axis order, the order of :attr:`array_shape`."""
        return tuple(reversed(self.spacing))

    def mismatches(self, other: "ImageGeometry", tolerance: float = GEOMETRY_TOLERANCE) -> list[str]:
        """Describe every field in which ``other`` differs from this geometry (empty if none)."""
        problems = []
        if self.size != other.size:
            problems.append(f"shape {_fmt(other.size)} != {_fmt(self.size)}")
        for field in ("spacing", "origin", "direction"):
            mine, theirs = getattr(self, field), getattr(other, field)
            if len(mine) != len(theirs) or not np.allclose(mine, theirs, rtol=0, atol=tolerance):
                problems.append(f"{field} {_fmt(theirs)} != {_fmt(mine)}")
        return problems


@dataclass(frozen=True)
class ImageHeader:
    """What the header of an image file says, read without its voxels."""

    geometry: ImageGeometry
    pixel_type: str
    components: int


def _fmt(values: tuple) -> str:
    return "(" + ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values) + ")"


def is_nifti(path: str | os.PathLike[str]) -> bool:
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def strip_nifti_suffix(name: str) -> str:
    lower = name.lower()
    for suffix in NIFTI_SUFFIXES:
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _itk_reason(error: Exception) -> str:
    """The human part of a SimpleITK/ITK exception (its text starts with source locations)."""
    text = str(error)
    for marker in ("Description:", "sitk::ERROR:"):
        if marker in text:
            reason = text.split(marker, 1)[1].strip().splitlines()[0]
            # The file is already named at the start of the message.
            return re.sub(r'\s*(for|from)?\s*"[^"]*"', "", reason).strip() or type(error).__name__
    return text.strip().splitlines()[-1] if text.strip() else type(error).__name__


def _geometry_of(source: sitk.Image | sitk.ImageFileReader) -> ImageGeometry:
    return ImageGeometry(size=tuple(int(s) for s in source.GetSize()),
                         spacing=tuple(float(s) for s in source.GetSpacing()),
                         origin=tuple(float(o) for o in source.GetOrigin()),
                         direction=tuple(float(d) for d in source.GetDirection()))


def read_header(path: str | os.PathLike[str]) -> ImageHeader:
    """Read geometry and pixel type from the header only (no voxel data)."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as error:
        raise ImageReadError(f"{path}: unreadable image header ({_itk_reason(error)})") from None
    return ImageHeader(geometry=_geometry_of(reader),
                       pixel_type=sitk.GetPixelIDValueAsString(reader.GetPixelID()),
                       components=int(reader.GetNumberOfComponents()))


def _read_voxels(path: str | os.PathLike[str]) -> np.ndarray:
    """Voxel values exactly as stored, in the file's (i, j, k) order, read with nibabel."""
    try:
        return np.asanyarray(nib.load(str(path)).dataobj)
    except (ImageFileError, OSError, EOFError, ValueError, zlib.error) as error:
        raise ImageReadError(f"{path}: unreadable image, truncated or corrupt ({error})") from None


def read_image(path: str | os.PathLike[str]) -> tuple[np.ndarray, ImageGeometry]:
    """Read voxels (numpy, z-y-x order like SimpleITK's arrays) and geometry (ITK header).

    Voxels come from nibabel because SimpleITK's NIfTI reader (seen with SimpleITK 2.5) returns
    NaN and inf voxels as 0 and zero-fills a truncated ``.nii.gz`` without an error; nibabel
    returns stored values unchanged and raises on truncation. Both read the same storage order,
    so SimpleITK's array is nibabel's transposed.
    """
    header = read_header(path)
    voxels = _read_voxels(path)
    if voxels.ndim != header.geometry.dimension:
        raise ImageReadError(f"{path}: header dimension {header.geometry.dimension} disagrees with "
                             f"the stored {voxels.ndim}D voxel array")
    return np.ascontiguousarray(voxels.T), header.geometry


def write_image_atomic(array: np.ndarray, geometry: ImageGeometry, path: str | os.PathLike[str]) -> Path:
    """Write ``array`` (z-y-x order) with ``geometry`` to ``path`` atomically; returns the path.

    SimpleITK's gzip stream has no timestamp, so the same array and geometry give the same bytes.
    """
    if tuple(array.shape) != geometry.array_shape:
        raise ValueError(f"array shape {array.shape} does not match geometry {geometry.array_shape}")
    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    image.SetSpacing(geometry.spacing)
    image.SetOrigin(geometry.origin)
    image.SetDirection(geometry.direction)
    target = Path(path)
    with atomic_output(target) as tmp:
        sitk.WriteImage(image, str(tmp), useCompression=is_nifti(target) and str(target).endswith(".gz"))
    return target
