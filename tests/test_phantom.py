"""Tests of the synthetic BraTS-like phantom generator."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest
from scipy import ndimage

from mmseg_robust.data.synthetic.phantom import Phantom, make_phantom

SEQUENCES = {"flair", "t1", "t1ce", "t2"}
SMALL = (64, 64, 64)
ISO = (1.0, 1.0, 1.0)
CONTRAST_SEEDS = range(5)


@lru_cache(maxsize=None)
def phantom(seed: int, grade: str = "HGG", shape: tuple[int, int, int] = SMALL,
            spacing: tuple[float, float, float] = ISO) -> Phantom:
    """Cached so that the many read-only checks below share one generation per case."""
    return make_phantom(shape, spacing, np.random.default_rng(seed), grade)


def _assert_same(a: Phantom, b: Phantom) -> None:
    assert a.grade == b.grade
    np.testing.assert_array_equal(a.label, b.label)
    np.testing.assert_array_equal(a.brain_mask, b.brain_mask)
    for name in SEQUENCES:
        np.testing.assert_array_equal(a.images[name], b.images[name])


@pytest.mark.parametrize("grade", ["HGG", "LGG"])
def test_same_seed_gives_identical_arrays(grade: str) -> None:
    first = make_phantom(SMALL, ISO, np.random.default_rng(7), grade)
    second = make_phantom(SMALL, ISO, np.random.default_rng(7), grade)
    _assert_same(first, second)


def test_different_seeds_give_different_arrays() -> None:
    first = make_phantom(SMALL, ISO, np.random.default_rng(7), "HGG")
    second = make_phantom(SMALL, ISO, np.random.default_rng(8), "HGG")
    assert not np.array_equal(first.label, second.label)
    assert not np.array_equal(first.brain_mask, second.brain_mask)
    for name in SEQUENCES:
        assert not np.array_equal(first.images[name], second.images[name])


@pytest.mark.parametrize("grade", ["HGG", "LGG"])
def test_keys_shapes_and_dtypes(grade: str) -> None:
    shape = (48, 56, 64)
    case = make_phantom(shape, ISO, np.random.default_rng(0), grade)
    assert case.grade == grade
    assert set(case.images) == SEQUENCES
    for image in case.images.values():
        assert image.dtype == np.int16 and image.shape == shape
    assert case.label.dtype == np.uint8 and case.label.shape == shape
    assert case.brain_mask.dtype == np.bool_ and case.brain_mask.shape == shape


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("grade", ["HGG", "LGG"])
def test_background_is_zero_and_labels_lie_in_brain(seed: int, grade: str) -> None:
    case = phantom(seed, grade)
    outside = ~case.brain_mask
    for name, image in case.images.items():
        assert not image[outside].any(), name
        # Brain voxels carry signal: otherwise "background is 0" would be vacuous.
        assert np.median(image[case.brain_mask]) > 0, name
    assert not case.label[outside].any()
    assert set(np.unique(case.label).tolist()) <= {0, 1, 2, 4}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_intensities_lie_in_a_realistic_range(seed: int) -> None:
    case = phantom(seed)
    normal = case.brain_mask & (case.label == 0)
    for name, image in case.images.items():
        assert image.min() >= 0, name
        assert 150 < np.median(image[normal]) < 2000, name
        assert image.max() < 6000, name


def test_global_gain_varies_between_cases() -> None:
    def flair_over_t1(case: Phantom) -> float:
        normal = case.brain_mask & (case.label == 0)
        return float(case.images["flair"][normal].mean() / case.images["t1"][normal].mean())

    ratios = [flair_over_t1(phantom(seed)) for seed in CONTRAST_SEEDS]
    assert max(ratios) / min(ratios) > 1.1


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_hgg_has_necrosis_edema_and_enhancing_tumour(seed: int) -> None:
    for shape in (SMALL, (96, 96, 96)):
        labels, counts = np.unique(phantom(seed, "HGG", shape).label, return_counts=True)
        assert set(labels.tolist()) == {0, 1, 2, 4}
        assert counts.min() > 0


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_lgg_has_core_and_edema_but_no_enhancing_tumour(seed: int) -> None:
    for shape in (SMALL, (96, 96, 96)):
        assert set(np.unique(phantom(seed, "LGG", shape).label).tolist()) == {0, 1, 2}


@pytest.mark.parametrize("grade", ["HGG", "LGG"])
def test_tumour_is_nested_and_deep_inside_the_brain(grade: str) -> None:
    for seed in CONTRAST_SEEDS:
        case = phantom(seed, grade)
        tumour, core = case.label > 0, np.isin(case.label, (1, 4))
        # Edema wraps the core, and the whole tumour keeps off the brain surface.
        assert not (ndimage.binary_dilation(core) & (case.label == 0)).any()
        assert not (ndimage.binary_dilation(tumour, iterations=2) & ~case.brain_mask).any()
        if grade == "HGG":
            necrosis = case.label == 1
            assert not (ndimage.binary_dilation(necrosis) & (case.label == 2)).any()


def test_hgg_tumour_is_bigger_than_lgg_on_average() -> None:
    shape = (96, 96, 96)
    hgg = np.mean([(phantom(s, "HGG", shape).label > 0).sum() for s in range(4)])
    lgg = np.mean([(phantom(s, "LGG", shape).label > 0).sum() for s in range(4)])
    assert hgg > lgg


def _relative_means(grade: str) -> dict[str, dict[int, float]]:
    """Mean intensity per label / mean of normal brain, per sequence, averaged over seeds."""
    sums: dict[str, dict[int, list[float]]] = {n: {1: [], 2: [], 4: []} for n in SEQUENCES}
    for seed in CONTRAST_SEEDS:
        case = phantom(seed, grade)
        normal = case.brain_mask & (case.label == 0)
        for name, image in case.images.items():
            reference = image[normal].astype(np.float64).mean()
            for value in (1, 2, 4):
                region = case.label == value
                if region.any():
                    sums[name][value].append(image[region].mean() / reference)
    return {n: {v: float(np.mean(r)) for v, r in per.items() if r} for n, per in sums.items()}


def test_hgg_contrasts_follow_modality_dominance() -> None:
    rel = _relative_means("HGG")
    ncr, edema, et = 1, 2, 4
    assert rel["t1ce"][et] > 1.3 * rel["t1ce"][edema]
    assert rel["t1ce"][et] > 1.3
    assert rel["flair"][edema] > 1.2
    assert rel["t2"][edema] > 1.2
    assert rel["t2"][ncr] > 1.0
    assert rel["t1ce"][ncr] < 1.0
    # The rim is conspicuous only after contrast: on T1 it stays near normal brain.
    assert rel["t1"][et] < 1.1
    assert rel["t1ce"][et] > rel["t1"][et] + 0.5


def test_lgg_core_does_not_enhance() -> None:
    rel = _relative_means("LGG")
    assert rel["flair"][2] > 1.2
    assert rel["t1ce"][1] < 1.0
    assert rel["t2"][1] > 1.0


def test_anisotropic_spacing_gives_a_proportioned_brain() -> None:
    shape, spacing = (40, 96, 96), (2.5, 1.0, 1.0)
    case = make_phantom(shape, spacing, np.random.default_rng(3), "HGG")
    assert case.images["t1"].shape == shape
    extents = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        extents.append(case.brain_mask.any(axis=other).sum() * spacing[axis])
    assert max(extents) / min(extents) < 1.3
    # The brain fills about 80 % of the field of view along every axis.
    for extent, n, s in zip(extents, shape, spacing):
        assert 0.65 < extent / (n * s) < 0.95
    assert set(np.unique(case.label).tolist()) == {0, 1, 2, 4}


@pytest.mark.parametrize("grade", ["hgg", "GBM", ""])
def test_unknown_grade_is_rejected(grade: str) -> None:
    with pytest.raises(ValueError, match="grade"):
        make_phantom(SMALL, ISO, np.random.default_rng(0), grade)


def test_grid_too_small_for_a_tumour_is_rejected() -> None:
    with pytest.raises(ValueError, match="tumour"):
        make_phantom((12, 12, 12), ISO, np.random.default_rng(0), "HGG")



def test_t1ce_only_core_contrast_hides_the_core_everywhere_but_t1ce() -> None:
    """``t1ce-only``: same anatomy, tumour and labels as the default (the draws do not depend on
    the contrast); on FLAIR, T1 and T2 NCR and ET look like edema, on T1ce they differ from it."""
    default = phantom(2)
    dominant = make_phantom(SMALL, ISO, np.random.default_rng(2), "HGG", core_contrast="t1ce-only")
    np.testing.assert_array_equal(default.label, dominant.label)
    np.testing.assert_array_equal(default.images["t1ce"], dominant.images["t1ce"])
    # Away from the boundaries (partial volume), compare the regions' mean intensities.
    inner = {v: ndimage.binary_erosion(dominant.label == v, iterations=1) for v in (1, 2, 4)}
    for name in ("flair", "t1", "t2"):
        image = dominant.images[name].astype(np.float64)
        edema = image[inner[2]].mean()
        for value in (1, 4):
            assert abs(image[inner[value]].mean() / edema - 1) < 0.05, (name, value)
    t1ce = dominant.images["t1ce"].astype(np.float64)
    assert t1ce[inner[4]].mean() > 1.3 * t1ce[inner[2]].mean() > 1.3 * t1ce[inner[1]].mean()
    assert not np.array_equal(default.images["flair"], dominant.images["flair"])
    with pytest.raises(ValueError, match="core contrast"):
        make_phantom(SMALL, ISO, np.random.default_rng(2), "HGG", core_contrast="flair-only")


def test_graded_core_contrast_is_a_fraction_of_t1ces_contrast_to_noise() -> None:
    """``graded``: on each weak sequence the core-vs-edema intensity step, in units of that
    sequence's noise, is beta times T1ce's (checked on the noise-free table and on the images);
    a larger beta shows more; labels, anatomy and T1ce are those of the other variants."""
    from mmseg_robust.data.synthetic.contrasts import GRADED_CORE_BETA
    from mmseg_robust.data.synthetic.phantom import EDEMA, ENHANCING, NECROSIS, WM, intensity_table

    table, reference = intensity_table("graded"), intensity_table("all-sequences")
    t1ce = table["t1ce"]
    for name, beta in GRADED_CORE_BETA.items():
        row = table[name]
        for cls in (ENHANCING, NECROSIS):
            step = (row[cls] - row[EDEMA]) / row[WM]
            assert step == pytest.approx(beta * (t1ce[cls] - t1ce[EDEMA]) / t1ce[WM]), (name, cls)
        assert row[:EDEMA + 1] == reference[name][:EDEMA + 1]  # normal tissue and edema: WT unchanged
    # Betas well above the defaults, so that the image-level steps stand clear of partial volume.
    chosen = {"flair": 0.3, "t2": 0.3, "t1": 0.3}
    graded = make_phantom(SMALL, ISO, np.random.default_rng(2), "HGG", core_contrast="graded", core_beta=chosen)
    stronger = make_phantom(SMALL, ISO, np.random.default_rng(2), "HGG", core_contrast="graded",
                            core_beta={**chosen, "flair": 0.6})
    np.testing.assert_array_equal(graded.label, phantom(2).label)
    np.testing.assert_array_equal(graded.images["t1ce"], phantom(2).images["t1ce"])
    inner = {v: ndimage.binary_erosion(graded.label == v, iterations=1) for v in (2, 4)}

    def et_step(image: np.ndarray) -> float:
        image = image.astype(np.float64)
        return image[inner[4]].mean() / image[inner[2]].mean() - 1

    hidden = make_phantom(SMALL, ISO, np.random.default_rng(2), "HGG", core_contrast="t1ce-only")
    for name in ("flair", "t1", "t2"):
        # The bias field and partial volume move a hidden core's step by a few per cent.
        assert et_step(graded.images[name]) > et_step(hidden.images[name]) + 0.05, name
    assert et_step(graded.images["flair"]) < et_step(stronger.images["flair"])
    assert et_step(graded.images["flair"]) < 0.5 * et_step(graded.images["t1ce"])
    with pytest.raises(ValueError, match="only the weak sequences"):
        make_phantom(SMALL, ISO, np.random.default_rng(2), "HGG", core_contrast="graded", core_beta={"t1ce": 0.5})
    with pytest.raises(ValueError, match="needs --core-contrast graded"):
        make_phantom(SMALL, ISO, np.random.default_rng(2), "HGG", core_contrast="t1ce-only", core_beta={"t1": 0.5})
