"""Fast, deterministic synthetic BraTS-like case: four skull-stripped MRI sequences and a label map.

Geometry is built in physical millimetres (so anisotropic voxels give a correctly proportioned
brain); every random draw comes from the caller's ``numpy.random.Generator``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
from scipy import ndimage

from mmseg_robust.data.synthetic.contrasts import check_core_beta

SEQUENCES: tuple[str, ...] = ("flair", "t1", "t1ce", "t2")
GRADES: tuple[str, ...] = ("HGG", "LGG")

# Tissue classes of the internal class map; each indexes a column of INTENSITY.
BACKGROUND, WM, GM, CSF, EDEMA, NECROSIS, ENHANCING, NON_ENHANCING, RESECTION_CAVITY = range(9)

#: Phantom label of the resection cavity (post-treatment phantoms only): no BraTS 2018 value, so
#: writers map it to their convention's ``rc`` (4 in BraTS 2024 GLI).
RC_LABEL = 5
# BraTS 2018 label of each class (normal tissue is 0), and RC_LABEL for the cavity.
CLASS_LABEL = np.array([0, 0, 0, 0, 2, 1, 4, 1, RC_LABEL], dtype=np.uint8)

# Noise-free intensity per class (columns as the class constants above), before the global gain.
# Chosen for realistic per-sequence contrast: ET stands out only on T1ce, edema on FLAIR/T2,
# necrosis is dark on T1ce and bright on T2; ET sits near GM outside T1ce.
# The resection cavity holds fluid: CSF's contrast (dark on FLAIR, T1 and T1ce, bright on T2).
INTENSITY: dict[str, tuple[float, ...]] = {
    #        bg    WM      GM     CSF    ED      NCR     ET      NET     RC
    "flair": (0.0, 700.0, 900.0, 250.0, 1500.0, 1000.0, 900.0, 1250.0, 250.0),
    "t1": (0.0, 1000.0, 750.0, 300.0, 780.0, 450.0, 760.0, 600.0, 300.0),
    "t1ce": (0.0, 1000.0, 780.0, 320.0, 820.0, 300.0, 1750.0, 620.0, 320.0),
    "t2": (0.0, 600.0, 850.0, 1600.0, 1350.0, 1500.0, 840.0, 1400.0, 1600.0),
}

# The tumour-core classes and the one sequence that shows them under ``t1ce-only``
# (:mod:`~mmseg_robust.data.synthetic.contrasts`).
CORE_CLASSES = (NECROSIS, ENHANCING, NON_ENHANCING)
CORE_SEQUENCE = "t1ce"


def intensity_table(core_contrast: str = "all-sequences",
                    core_beta: Mapping[str, float] | None = None) -> dict[str, tuple[float, ...]]:
    """Noise-free intensity per class and sequence for ``core_contrast`` (one of
    :data:`~mmseg_robust.data.synthetic.contrasts.CORE_CONTRASTS`).

    ``t1ce-only`` gives the core classes edema's intensity on every sequence but T1ce. ``graded``
    gives weak sequence s the core class c at ``ED_s + beta_s * (T1ce_c - T1ce_ED) * WM_s / WM_T1ce``:
    the core's contrast against edema in units of the sequence's noise (which scales with its white
    matter) is ``beta_s`` times T1ce's. WT contrasts (edema against normal tissue) are unchanged.
    ``core_beta`` overrides :data:`~mmseg_robust.data.synthetic.contrasts.GRADED_CORE_BETA` per weak
    sequence (``graded`` only).

    Raises:
        CoreContrastError: an unknown variant or a bad beta (:func:`check_core_beta`).
    """
    beta = check_core_beta(core_contrast, core_beta)
    if core_contrast == "all-sequences":
        return dict(INTENSITY)
    reference = INTENSITY[CORE_SEQUENCE]
    table = {}
    for name, values in INTENSITY.items():
        row = list(values)
        if name != CORE_SEQUENCE:
            scale = (beta or {}).get(name, 0.0) * row[WM] / reference[WM]
            for cls in CORE_CLASSES:
                row[cls] = row[EDEMA] + scale * (reference[cls] - reference[EDEMA])
        table[name] = tuple(row)
    return table


# Brain: ellipsoid filling this fraction of the half field of view, radius modulated smoothly.
BRAIN_FILL = 0.8
BRAIN_WOBBLE = 0.05          # relative radius modulation (per unit of the smooth field)
BRAIN_KNOTS_PER_RADIUS = 2.5  # control points per mean brain radius of the wobble field
CSF_RIM_MM = 1.2             # outer subarachnoid CSF
CORTEX_MM = 3.5              # mean cortical thickness
CORTEX_WAVE_MM = 1.5         # gyral undulation of the grey/white boundary
CORTEX_WAVE_KNOT_MM = 12.0
# Lateral ventricles, in fractions of the brain semi-axes (z, y, x); offset is left/right (x).
VENTRICLE_SEMI_AXES = (0.13, 0.30, 0.08)
VENTRICLE_OFFSET_X = 0.12
VENTRICLE_SCALE_RANGE = (0.8, 1.2)
VENTRICLE_JITTER_Y = 0.05    # anterior/posterior jitter of each ventricle centre

# Tumour radii: edema in fractions of the mean brain radius, core of edema, necrosis of core.
EDEMA_FRACTION = {"HGG": (0.30, 0.42), "LGG": (0.26, 0.36)}
CORE_FRACTION = (0.45, 0.65)
NECROSIS_FRACTION = (0.40, 0.70)
# Floor on the necrosis radius in voxel diagonals: smaller cores are all partial volume.
MIN_NECROSIS_DIAGONALS = 2.0
EDEMA_WOBBLE = 0.35
EDEMA_MARGIN = 0.12          # thinnest edema around the core, in edema radii
CORE_WOBBLE = 0.15
EDEMA_KNOT_FRACTION = 0.6    # knot spacing of the edema outline, in edema radii (lobulated)
CORE_KNOT_FRACTION = 0.8
FIELD_CLIP = 1.5             # bound of every shape modulation, so radii stay positive and known
TUMOUR_CENTRE_MAX = 0.55     # centre drawn within this normalised brain radius
TUMOUR_ATTEMPTS = 200        # placements tried before giving up
TUMOUR_SHRINK_EVERY = 10     # failed placements before the tumour shrinks (tight brains)
TUMOUR_SHRINK = 0.8
# Post-treatment: the cavity's radius in the tumour's equivalent-sphere radius.
CAVITY_FRACTION = (0.5, 0.7)

# Image formation.
GAIN_RANGE = (0.7, 1.3)
TEXTURE_AMPLITUDE = 0.03
TEXTURE_KNOT_MM = 6.0
PARTIAL_VOLUME_SIGMA_MM = 0.7
BLUR_TRUNCATE = 3.0          # kernel radius in sigmas
BIAS_AMPLITUDE = 0.15        # peak of the log bias field (about +-15 %)
BIAS_KNOTS_PER_FOV = 3.0
NOISE_FRACTION_OF_WM = 0.03
INT16_MAX = np.iinfo(np.int16).max

# 1-D voxel-centre coordinates in mm along (z, y, x), centred on the field of view.
Axes = tuple[np.ndarray, np.ndarray, np.ndarray]


@dataclass(frozen=True)
class Phantom:
    """One synthetic case: int16 images keyed by sequence, BraTS 2018 labels (and :data:`RC_LABEL`
    for a resection cavity), brain mask, grade."""

    images: dict[str, np.ndarray]
    label: np.ndarray
    brain_mask: np.ndarray
    grade: str


def _bspline_basis(coords: np.ndarray, knot_mm: float) -> np.ndarray:
    """Cubic B-spline basis (len(coords) x knots), rows scaled to unit sum of squares.

    Unit row norms make a field with i.i.d. N(0, 1) coefficients have unit variance everywhere.
    """
    lo = float(coords.min()) - 2 * knot_mm
    n_knots = int(np.ceil((float(coords.max()) - float(coords.min())) / knot_mm)) + 5
    t = np.abs((coords[:, None] - lo) / knot_mm - np.arange(n_knots)[None, :])
    basis = np.where(t < 1, (4 - 6 * t**2 + 3 * t**3) / 6, np.where(t < 2, (2 - t) ** 3 / 6, 0.0))
    basis /= np.sqrt((basis**2).sum(axis=1, keepdims=True))
    return basis.astype(np.float32)


def _smooth_field(axes: Axes, knot_mm: tuple[float, ...],
                  rng: np.random.Generator) -> np.ndarray:
    """Unit-variance smooth random field on the grid of 1-D mm coordinates ``axes``.

    Tensor-product spline of a small random control grid, evaluated separably with three matrix
    products: far cheaper than interpolating the full volume.
    """
    bz, by, bx = (_bspline_basis(c, k) for c, k in zip(axes, knot_mm))
    coeffs = rng.standard_normal((bz.shape[1], by.shape[1], bx.shape[1]), dtype=np.float32)
    field = np.tensordot(bz, coeffs, axes=(1, 0))      # (z, gy, gx)
    field = np.tensordot(field, by, axes=(1, 1))       # (z, gx, y)
    return np.tensordot(field, bx, axes=(1, 1))        # (z, y, x)


def _bounded(field: np.ndarray) -> np.ndarray:
    """Squash into (-FIELD_CLIP, FIELD_CLIP) smoothly: hard clipping leaves flat spherical caps."""
    return FIELD_CLIP * np.tanh(field / FIELD_CLIP)


def _normalised_radius(axes: Axes, centre: tuple[float, ...],
                       semi: tuple[float, ...]) -> np.ndarray:
    """sqrt(sum(((x_i - c_i) / a_i)^2)) via broadcasting of 1-D axes (cheap open grid)."""
    z, y, x = ((a - c) / s for a, c, s in zip(axes, centre, semi))
    return np.sqrt(z[:, None, None] ** 2 + y[None, :, None] ** 2 + x[None, None, :] ** 2)


def _anatomy(axes: Axes, semi: tuple[float, float, float],
             rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Brain mask, class map (WM, GM, CSF) and deep-brain mask (below the cortex)."""
    mean_radius = float(np.mean(semi))
    wobble = _smooth_field(axes, (mean_radius / BRAIN_KNOTS_PER_RADIUS,) * 3, rng)
    surface = 1.0 + BRAIN_WOBBLE * _bounded(wobble)
    radius = _normalised_radius(axes, (0.0, 0.0, 0.0), semi)
    brain = radius < surface
    # First-order distance to the surface level set: (level gap) / |grad of normalised radius|.
    z, y, x = (a / s**2 for a, s in zip(axes, semi))
    grad = np.sqrt(z[:, None, None] ** 2 + y[None, :, None] ** 2 + x[None, None, :] ** 2)
    depth = (surface - radius) * radius / np.maximum(grad, 1e-6)
    wave = _smooth_field(axes, (CORTEX_WAVE_KNOT_MM,) * 3, rng)
    gm_inner = CSF_RIM_MM + CORTEX_MM + CORTEX_WAVE_MM * _bounded(wave)

    classes = np.full(brain.shape, BACKGROUND, dtype=np.uint8)
    classes[brain] = WM
    classes[brain & (depth < gm_inner)] = GM
    classes[brain & (depth < CSF_RIM_MM)] = CSF
    for side in (-1.0, 1.0):
        scale = rng.uniform(*VENTRICLE_SCALE_RANGE)
        jitter = rng.uniform(-VENTRICLE_JITTER_Y, VENTRICLE_JITTER_Y)
        centre = (0.0, jitter * semi[1], side * VENTRICLE_OFFSET_X * semi[2])
        vent_semi = tuple(f * s * scale for f, s in zip(VENTRICLE_SEMI_AXES, semi))
        classes[_normalised_radius(axes, centre, vent_semi) < 1.0] = CSF
    return brain, classes, brain & (depth >= gm_inner)


def _tumour_radii(mean_radius: float, voxel_diag: float, grade: str,
                  rng: np.random.Generator) -> tuple[float, float, float]:
    """Edema, core and necrosis radii (mm); on coarse grids necrosis and rim are widened to stay
    a couple of voxels thick (else they would be pure partial volume)."""
    edema = rng.uniform(*EDEMA_FRACTION[grade]) * mean_radius
    core = rng.uniform(*CORE_FRACTION) * edema
    necrosis = rng.uniform(*NECROSIS_FRACTION) * core
    necrosis = max(necrosis, MIN_NECROSIS_DIAGONALS * voxel_diag)
    core = max(core, necrosis + voxel_diag / (1 - CORE_WOBBLE * FIELD_CLIP))
    # Keep edema the largest region when the floors above have inflated the core.
    edema = max(edema, core / CORE_FRACTION[1])
    return edema, core, necrosis


def _tumour_box(axes: Axes, centre_idx: tuple[int, ...], radii: tuple[float, float, float],
                voxel_diag: float, grade: str,
                rng: np.random.Generator) -> tuple[tuple[slice, ...], np.ndarray] | None:
    """Tumour classes in a box around ``centre_idx`` as (slices, classes); None if off-grid."""
    edema_r, core_r, necrosis_r = radii
    # At least a voxel diagonal, so some edema survives on coarse grids.
    margin = max(EDEMA_MARGIN * edema_r, voxel_diag)
    reach = max(edema_r * (1 + EDEMA_WOBBLE * FIELD_CLIP),
                core_r * (1 + CORE_WOBBLE * FIELD_CLIP) + margin)
    slices = []
    for a, i in zip(axes, centre_idx):
        half = int(np.ceil(reach / float(a[1] - a[0]))) + 1
        if i - half < 0 or i + half + 1 > len(a):
            return None
        slices.append(slice(i - half, i + half + 1))
    local = tuple(a[s] for a, s in zip(axes, slices))
    centre = tuple(float(a[i]) for a, i in zip(axes, centre_idx))
    dist = _normalised_radius(local, centre, (1.0, 1.0, 1.0))
    edema_field = _smooth_field(local, (EDEMA_KNOT_FRACTION * edema_r,) * 3, rng)
    core_field = _smooth_field(local, (CORE_KNOT_FRACTION * core_r,) * 3, rng)
    edema_shape = 1 + EDEMA_WOBBLE * _bounded(edema_field)
    # Core and necrosis share one outline modulation, so the rim's thinnest point is known.
    core_shape = 1 + CORE_WOBBLE * _bounded(core_field)
    core = dist < core_r * core_shape
    box = np.zeros(dist.shape, dtype=np.uint8)
    # Edema surrounds the whole core, however the two outlines happen to wobble.
    box[dist < np.maximum(edema_r * edema_shape, core_r * core_shape + margin)] = EDEMA
    if grade == "HGG":
        box[core] = ENHANCING
        box[dist < necrosis_r * core_shape] = NECROSIS
    else:
        box[core] = NON_ENHANCING
    return tuple(slices), box


def _place_tumour(axes: Axes, semi: tuple[float, float, float], classes: np.ndarray,
                  deep: np.ndarray, voxel_diag: float, grade: str,
                  rng: np.random.Generator) -> None:
    """Draw a tumour whose whole extent lies in deep brain (WM/ventricles); write it in place."""
    radii = _tumour_radii(float(np.mean(semi)), voxel_diag, grade, rng)
    shrink = 1.0
    for attempt in range(TUMOUR_ATTEMPTS):
        if attempt and attempt % TUMOUR_SHRINK_EVERY == 0:
            shrink *= TUMOUR_SHRINK
        direction = rng.standard_normal(3)
        direction /= np.linalg.norm(direction)
        # Cube root: uniform over the ball, not crowded at its centre.
        depth = TUMOUR_CENTRE_MAX * rng.uniform() ** (1 / 3)
        centre_mm = direction * depth * np.asarray(semi)
        idx = tuple(int(np.argmin(np.abs(a - c))) for a, c in zip(axes, centre_mm))
        if classes[idx] != WM:
            continue
        placed = _tumour_box(axes, idx, tuple(r * shrink for r in radii), voxel_diag, grade, rng)
        if placed is None:
            continue
        slices, box = placed
        inside = box > 0
        if np.all(deep[slices][inside]):
            classes[slices][inside] = box[inside]
            return
    raise ValueError(f"no room for a tumour in the white matter of a {classes.shape} grid")


def _place_cavity(axes: Axes, classes: np.ndarray, brain: np.ndarray, rng: np.random.Generator) -> None:
    """A resection cavity centred on the tumour's equivalent sphere in a random direction, so it
    borders the tumour; it replaces edema and normal tissue inside the brain, never the core."""
    tumour = np.isin(classes, (EDEMA, *CORE_CLASSES))
    index = np.nonzero(tumour)
    centroid = np.array([float(a[i].mean()) for a, i in zip(axes, index)])
    voxel_mm3 = float(np.prod([a[1] - a[0] for a in axes]))
    radius = (3 * int(tumour.sum()) * voxel_mm3 / (4 * np.pi)) ** (1 / 3)
    direction = rng.standard_normal(3)
    direction /= np.linalg.norm(direction)
    cavity_radius = rng.uniform(*CAVITY_FRACTION) * radius
    cavity = _normalised_radius(axes, tuple(centroid + direction * radius), (cavity_radius,) * 3) < 1.0
    classes[cavity & brain & ~np.isin(classes, CORE_CLASSES)] = RESECTION_CAVITY


def _padded_bbox(mask: np.ndarray, pad: list[int]) -> tuple[slice, ...]:
    """Bounding box of ``mask`` grown by ``pad`` voxels per axis, clipped to the array."""
    box = []
    for axis, p in enumerate(pad):
        hits = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        box.append(slice(max(int(hits[0]) - p, 0), min(int(hits[-1]) + 1 + p, mask.shape[axis])))
    return tuple(box)


def _rician(signal: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Magnitude of complex Gaussian noise added to a real signal."""
    real = signal + sigma * rng.standard_normal(signal.shape, dtype=np.float32)
    imag = sigma * rng.standard_normal(signal.shape, dtype=np.float32)
    return np.sqrt(real * real + imag * imag)


def make_phantom(shape: tuple[int, int, int], spacing: tuple[float, float, float],
                 rng: np.random.Generator, grade: str, core_contrast: str = "all-sequences",
                 core_beta: Mapping[str, float] | None = None, post_treatment: bool = False) -> Phantom:
    """Generate one synthetic multi-sequence case.

    ``shape`` and ``spacing`` (mm per voxel) are in array order (z, y, x); ``grade`` is "HGG"
    (necrosis + enhancing rim) or "LGG" (non-enhancing core only). The same rng state gives
    identical arrays. ``core_contrast`` (:data:`CORE_CONTRASTS`) says which sequences show the
    tumour core (``core_beta``: ``graded``'s beta per weak sequence, :func:`intensity_table`); the
    random draws do not depend on either, so every variant shares the anatomy, the tumour and the
    labels. Raises ValueError on bad arguments or a grid too small to hold a tumour
    (about 24 mm a side or less). Every sub-region is present from about 32 voxels and 32 mm a
    side; on coarser grids the tumour is shrunk to fit and a thin sub-region may vanish.
    ``post_treatment`` adds a fluid-filled resection cavity beside the tumour (label
    :data:`RC_LABEL`, BraTS 2024 GLI's RC); anatomy and tumour stay those of the same rng state.
    """
    if grade not in GRADES:
        raise ValueError(f"grade must be one of {GRADES}, got {grade!r}")
    if len(shape) != 3 or min(shape) < 8:
        raise ValueError(f"shape must be three sizes of at least 8 voxels, got {shape}")
    if len(spacing) != 3 or min(spacing) <= 0:
        raise ValueError(f"spacing must be three positive sizes in mm, got {spacing}")
    intensities = intensity_table(core_contrast, core_beta)
    spacing_arr = np.asarray(spacing, dtype=np.float64)
    axes = tuple(((np.arange(n) - (n - 1) / 2) * s).astype(np.float32)
                 for n, s in zip(shape, spacing_arr))
    semi = tuple(BRAIN_FILL * n * float(s) / 2 for n, s in zip(shape, spacing_arr))

    brain, classes, deep = _anatomy(axes, semi, rng)
    _place_tumour(axes, semi, classes, deep, float(np.linalg.norm(spacing_arr)), grade, rng)
    if post_treatment:
        _place_cavity(axes, classes, brain, rng)

    # Image formation runs on the brain's bounding box, padded past the blur kernel's reach, so it
    # equals the full-volume result at about half the cost.
    blur_sigma = PARTIAL_VOLUME_SIGMA_MM / spacing_arr
    crop = _padded_bbox(brain, [int(BLUR_TRUNCATE * sd + 0.5) + 1 for sd in blur_sigma])
    crop_axes = tuple(a[c] for a, c in zip(axes, crop))
    crop_classes = classes[crop]
    # One texture for all sequences: it stands for tissue microstructure, not the scanner.
    texture_field = _smooth_field(crop_axes, (TEXTURE_KNOT_MM,) * 3, rng)
    texture = 1 + TEXTURE_AMPLITUDE * _bounded(texture_field)
    bias_knots = tuple(np.asarray(shape) * spacing_arr / BIAS_KNOTS_PER_FOV)
    # Noise is drawn for brain voxels only (background ends up 0 anyway): draws dominate runtime.
    inside = np.flatnonzero(brain[crop])
    images: dict[str, np.ndarray] = {}
    for name in SEQUENCES:
        gain = np.float32(rng.uniform(*GAIN_RANGE))
        table = np.asarray(intensities[name], dtype=np.float32) * gain
        clean = ndimage.gaussian_filter(table[crop_classes], blur_sigma, truncate=BLUR_TRUNCATE)
        log_bias = BIAS_AMPLITUDE / FIELD_CLIP * _bounded(_smooth_field(crop_axes, bias_knots, rng))
        signal = clean * texture * np.exp(log_bias)
        noisy = _rician(signal.ravel()[inside], NOISE_FRACTION_OF_WM * float(table[WM]), rng)
        cropped = np.zeros(crop_classes.shape, dtype=np.int16)
        cropped.ravel()[inside] = np.clip(np.rint(noisy), 0, INT16_MAX).astype(np.int16)
        image = np.zeros(shape, dtype=np.int16)
        image[crop] = cropped
        images[name] = image
    return Phantom(images=images, label=CLASS_LABEL[classes], brain_mask=brain, grade=grade)
