"""Preprocessing on real NIfTI files: cropping, z-scoring, resampling, storage, idempotence."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from mmseg_robust.planners.plans import Plans
from mmseg_robust.preprocessing.cropping import crop, uncrop
from mmseg_robust.preprocessing.normalization import zscore_in_mask
from mmseg_robust.preprocessing.preprocessor import PreprocessingError, preprocess_case, preprocess_dataset
from mmseg_robust.preprocessing.resampling import (
    compute_new_shape,
    needs_resampling,
    resample_image,
    resample_mask,
    resample_regions,
)
from mmseg_robust.preprocessing.storage import (
    MAX_FOREGROUND_SAMPLES,
    PROPERTIES_FILE,
    PreprocessedCaseError,
    PreprocessedCaseProperties,
    is_finished,
    load_preprocessed_case,
    read_properties,
    sample_foreground,
)

from mmseg_robust.data.discovery import discover_dataset
from mmseg_robust.data.labels import BRATS_2018, REGIONS, label_to_subregions, subregions_to_regions
from mmseg_robust.data.modalities import MODALITIES
from mmseg_robust.data.nifti_io import read_image, write_image_atomic
from mmseg_robust.data.synthetic.writer import SyntheticSpec, make_synthetic_dataset

LAYOUT = "brats2021"
#: Extra datasets made by single tests stay small (the writer needs >= 32 mm per axis).
SMALL_SHAPE = (32, 32, 32)
TOLERANCE = {"float32": 1e-2, "float16": 3e-2}


def make_plans(**overrides: object) -> Plans:
    plans = Plans(dataset_name="Test", modalities=MODALITIES, label_convention=BRATS_2018,
                  target_spacing=(1.0, 1.0, 1.0), resample=False,
                  normalization={m: "zscore_brain" for m in MODALITIES}, image_dtype="float32",
                  median_shape=(40, 48, 48), gpu_memory_gb=24.0, configurations={})
    return dataclasses.replace(plans, **overrides)


def raw_stack(case) -> np.ndarray:
    return np.stack([read_image(case.images[m])[0] for m in case.modalities])


def bounding_box(mask: np.ndarray) -> tuple[tuple[int, int], ...]:
    """Independent reference: min/max of the nonzero indices per axis."""
    where = np.nonzero(mask)
    return tuple((int(w.min()), int(w.max()) + 1) for w in where)


@pytest.fixture(scope="module")
def raw_cases(synthetic_datasets: dict[str, Path]):
    return discover_dataset(synthetic_datasets[LAYOUT]).cases


@pytest.fixture(scope="module")
def stored(raw_cases, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The layout's dataset preprocessed once per image dtype (read-only for the tests)."""
    out = {}
    for dtype in ("float32", "float16"):
        folder = tmp_path_factory.mktemp(f"pre_{dtype}")
        preprocess_dataset(raw_cases, make_plans(image_dtype=dtype), folder, progress=False)
        out[dtype] = folder
    return out


def test_crop_box_is_union_bounding_box_of_images(raw_cases, stored):
    for case in raw_cases:
        props = load_preprocessed_case(stored["float32"] / case.case_id).properties
        images = raw_stack(case)
        assert props.crop_box == bounding_box(np.any(images != 0, axis=0))
        assert props.cropped_shape == tuple(b - a for a, b in props.crop_box)
        label = read_image(case.label)[0]
        assert np.count_nonzero(crop(label, props.crop_box)) == np.count_nonzero(label)


def test_crop_box_includes_label_outside_the_brain(copy_dataset, tmp_path):
    root = copy_dataset(LAYOUT)
    case = discover_dataset(root).cases[0]
    label, geometry = read_image(case.label)
    assert np.all(raw_stack(case)[:, 0, 0, 0] == 0)  # the corner is background in every image
    label[0, 0, 0] = case.convention.edema
    write_image_atomic(label, geometry, case.label)
    props = preprocess_case(case, make_plans(), tmp_path / "out")
    assert props.crop_box == bounding_box(np.any(raw_stack(case) != 0, axis=0) | (label != 0))
    assert [start for start, _ in props.crop_box] == [0, 0, 0]
    loaded = load_preprocessed_case(tmp_path / "out" / case.case_id)
    assert np.all(loaded.images[:, 0, 0, 0] == 0)  # outside the brain mask, whatever the label says


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_zscore_inside_brain_and_zero_outside(raw_cases, stored, dtype):
    for case in raw_cases:
        images, _, _, props = load_preprocessed_case(stored[dtype] / case.case_id)
        assert images.dtype == np.dtype(dtype)
        raw = crop(raw_stack(case), props.crop_box).astype(np.float64)
        brain = np.any(raw != 0, axis=0)
        for channel, modality in enumerate(props.modalities):
            inside = images[channel][brain].astype(np.float64)
            assert abs(inside.mean()) < TOLERANCE[dtype]
            assert abs(inside.std() - 1.0) < TOLERANCE[dtype]
            assert np.all(images[channel][~brain] == 0)
            stats = props.normalization[modality]
            assert stats["scheme"] == "zscore_brain"
            assert stats["mean"] == pytest.approx(raw[channel][brain].mean(), rel=1e-9)
            assert stats["std"] == pytest.approx(raw[channel][brain].std(), rel=1e-9)


@pytest.mark.parametrize("layout", ["brats2021", "brats2023", "nnunet"])
def test_seg_matches_label_and_uncrop_restores_it(synthetic_datasets, tmp_path, layout):
    case = discover_dataset(synthetic_datasets[layout]).cases[0]
    preprocess_case(case, make_plans(), tmp_path)
    _, seg, _, props = load_preprocessed_case(tmp_path / case.case_id)
    label, geometry = read_image(case.label)
    codes = label_to_subregions(label, case.convention)
    assert seg.dtype == np.uint8
    assert np.array_equal(seg, label_to_subregions(crop(label, props.crop_box), case.convention))
    assert np.array_equal(uncrop(np.asarray(seg), props.crop_box, props.original_shape), codes)
    assert props.original_shape == label.shape
    assert props.itk_geometry == dataclasses.asdict(geometry)
    assert props.original_spacing == tuple(reversed(geometry.spacing))
    assert props.label_convention == case.convention.to_dict()
    assert props.source_files == {**{m: str(p) for m, p in case.images.items()}, "label": str(case.label)}


def test_properties_round_trip(raw_cases, stored):
    props = load_preprocessed_case(stored["float32"] / raw_cases[0].case_id).properties
    assert PreprocessedCaseProperties.from_dict(props.to_dict()) == props


def test_properties_errors_name_the_file(raw_cases, stored, tmp_path):
    absent = tmp_path / "absent"
    with pytest.raises(PreprocessedCaseError, match=f"^{absent / PROPERTIES_FILE}: no properties file "
                                                    r"\(case not preprocessed or interrupted\)$"):
        read_properties(absent)
    props = load_preprocessed_case(stored["float32"] / raw_cases[0].case_id).properties
    folder = tmp_path / "case"
    folder.mkdir()
    props.save(folder / PROPERTIES_FILE)
    assert read_properties(folder) == props
    (folder / PROPERTIES_FILE).write_text(json.dumps({**props.to_dict(), "schema_version": 0}))
    with pytest.raises(PreprocessedCaseError, match="properties.json: properties schema version 0"):
        read_properties(folder)
    (folder / PROPERTIES_FILE).write_text("{")
    with pytest.raises(PreprocessedCaseError, match="properties.json: unreadable properties"):
        read_properties(folder)


def test_foreground_locations_lie_in_their_region(raw_cases, stored):
    for case in raw_cases:
        _, seg, foreground, props = load_preprocessed_case(stored["float32"] / case.case_id)
        regions = subregions_to_regions(np.asarray(seg))
        assert foreground.dtype == np.int32 and foreground.shape[1] == 4
        assert np.all(regions[foreground[:, 0], foreground[:, 1], foreground[:, 2], foreground[:, 3]])
        for index, name in enumerate(REGIONS):
            assert props.foreground_counts[name] == int(regions[index].sum())
            expected = min(props.foreground_counts[name], MAX_FOREGROUND_SAMPLES)
            assert int(np.sum(foreground[:, 0] == index)) == expected
        assert props.foreground_counts["WT"] > 0
        rows = [tuple(r) for r in foreground.tolist()]
        assert rows == sorted(rows)


def test_foreground_sampling_is_bounded_seeded_and_sorted(raw_cases, stored):
    seg = np.asarray(load_preprocessed_case(stored["float32"] / raw_cases[0].case_id).seg)
    regions = subregions_to_regions(seg)
    cap = 50
    first, counts = sample_foreground(regions, "case_a", seed=0, max_samples=cap)
    again, _ = sample_foreground(regions, "case_a", seed=0, max_samples=cap)
    other_case, _ = sample_foreground(regions, "case_b", seed=0, max_samples=cap)
    other_seed, _ = sample_foreground(regions, "case_a", seed=1, max_samples=cap)
    assert all(counts[name] > cap for name in REGIONS)
    assert first.shape == (cap * len(REGIONS), 4)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other_case) and not np.array_equal(first, other_seed)
    assert np.all(regions[first[:, 0], first[:, 1], first[:, 2], first[:, 3]])
    rows = [tuple(r) for r in first.tolist()]
    assert rows == sorted(rows) and len(set(rows)) == len(rows)


def test_bytes_are_deterministic_across_runs_and_processes(raw_cases, stored, tmp_path, digest):
    reference = digest(stored["float32"])
    assert len(reference) == 4 * len(raw_cases)  # no temporary files left behind
    preprocess_dataset(raw_cases, make_plans(), tmp_path / "again", progress=False)
    preprocess_dataset(raw_cases, make_plans(), tmp_path / "parallel", num_processes=2, progress=False)
    assert digest(tmp_path / "again") == reference
    assert digest(tmp_path / "parallel") == reference


def test_rerun_skips_finished_and_redoes_stale_cases(raw_cases, tmp_path):
    out = tmp_path / "out"
    first = preprocess_dataset(raw_cases, make_plans(), out, progress=False)
    assert (first.n_processed, first.n_skipped) == (len(raw_cases), 0)
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*")}

    second = preprocess_dataset(raw_cases, make_plans(), out, progress=False)
    assert (second.n_processed, second.n_skipped) == (0, len(raw_cases))
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == mtimes

    # An interrupted case (no properties.json yet) is redone, the others are kept.
    (out / raw_cases[1].case_id / PROPERTIES_FILE).unlink()
    third = preprocess_dataset(raw_cases, make_plans(), out, progress=False)
    assert third.processed_ids == (raw_cases[1].case_id,)

    forced = preprocess_dataset(raw_cases, make_plans(), out, overwrite=True, progress=False)
    assert forced.n_processed == len(raw_cases)

    half = make_plans(image_dtype="float16")
    assert not is_finished(out / raw_cases[0].case_id, half.preprocessing_signature())
    changed = preprocess_dataset(raw_cases, half, out, progress=False)
    assert (changed.n_processed, changed.n_skipped) == (len(raw_cases), 0)
    assert load_preprocessed_case(out / raw_cases[0].case_id).images.dtype == np.float16
    assert is_finished(out / raw_cases[0].case_id, half.preprocessing_signature())


def test_incomplete_case_stores_only_present_channels(tmp_path):
    root = make_synthetic_dataset(tmp_path / "raw", SyntheticSpec(LAYOUT, 2, SMALL_SHAPE, seed=5,
                                                                  incomplete_fraction=1.0), progress=False)
    cases = discover_dataset(root).cases
    preprocess_dataset(cases, make_plans(), tmp_path / "out", progress=False)
    for case in cases:
        assert len(case.modalities) == len(MODALITIES) - 1
        images, _, _, props = load_preprocessed_case(tmp_path / "out" / case.case_id)
        assert props.modalities == case.modalities
        assert images.shape[0] == len(case.modalities)
        assert set(props.normalization) == set(case.modalities)
    # Planned modalities restrict the channels too.
    props = preprocess_case(cases[0], make_plans(modalities=("t1", "t2")), tmp_path / "sub")
    wanted = tuple(m for m in ("t1", "t2") if m in cases[0].modalities)
    assert props.modalities == wanted
    assert load_preprocessed_case(tmp_path / "sub" / cases[0].case_id).images.shape[0] == len(wanted)


def test_resampling_anisotropic_case(tmp_path):
    spacing = (2.0, 1.0, 1.0)
    root = make_synthetic_dataset(tmp_path / "raw", SyntheticSpec(LAYOUT, 1, (20, 40, 40), spacing, seed=7),
                                  progress=False)
    case = discover_dataset(root).cases[0]
    preprocess_case(case, make_plans(resample=True), tmp_path / "out")
    images, seg, foreground, props = load_preprocessed_case(tmp_path / "out" / case.case_id)
    expected = tuple(n * round(s) for n, s in zip(props.cropped_shape, spacing))
    assert props.shape_after_resampling == expected
    assert images.shape == (4,) + expected and seg.shape == expected
    assert props.target_spacing == (1.0, 1.0, 1.0) and props.original_spacing == spacing
    assert np.all(np.isfinite(images)) and np.all(images[:, 0, 0, 0] == 0)
    raw_wt = np.count_nonzero(read_image(case.label)[0]) * np.prod(spacing)
    stored_wt = props.foreground_counts["WT"] * 1.0
    assert abs(stored_wt - raw_wt) / raw_wt < 0.10
    regions = subregions_to_regions(np.asarray(seg))
    assert np.all(regions[foreground[:, 0], foreground[:, 1], foreground[:, 2], foreground[:, 3]])


def test_resample_regions_keeps_nesting():
    rng = np.random.default_rng(0)
    regions = rng.random((3, 6, 8, 8)) > 0.5  # deliberately not nested
    out = resample_regions(regions, (12, 8, 8))
    assert out.shape == (3, 12, 8, 8) and out.dtype == bool
    assert not np.any(out[1] & ~out[0]) and not np.any(out[2] & ~out[1])
    nested = np.stack([regions[0], regions[0] & regions[1], regions[0] & regions[1] & regions[2]])
    out = resample_regions(nested, (12, 8, 8))
    assert all(np.array_equal(out[i], resample_mask(nested[i], (12, 8, 8))) for i in range(3))


def test_resample_image_aligns_voxel_centres():
    length = 32
    ramp = np.broadcast_to(np.arange(length, dtype=np.float32)[:, None, None], (length, 4, 4))[None]
    out = resample_image(ramp, (2 * length, 4, 4))
    assert out.dtype == np.float32 and out.shape == (1, 2 * length, 4, 4)
    # Edge-aligned grids: output voxel o samples input coordinate (o + 0.5) / 2 - 0.5. Cubic
    # splines reproduce a ramp exactly away from the edges (the boundary effect decays fast);
    # corner-aligned grids would be off by up to a quarter voxel here.
    interior = np.arange(length // 2, 3 * length // 2)
    assert np.allclose(out[0, interior, 1, 1], (interior + 0.5) / 2 - 0.5, atol=1e-3)
    assert np.array_equal(resample_image(ramp, (length, 4, 4)), ramp)


def test_shape_and_spacing_helpers():
    assert compute_new_shape((20, 40, 41), (2.0, 1.0, 1.0), (1.0, 1.0, 1.0)) == (40, 40, 41)
    assert compute_new_shape((155, 240, 240), (1.0, 1.0, 1.0), (1.5, 1.5, 1.5)) == (103, 160, 160)
    assert not needs_resampling((1.0, 1.0, 1.0005), (1.0, 1.0, 1.0))
    assert needs_resampling((1.0, 1.0, 1.01), (1.0, 1.0, 1.0))


def test_zscore_guards_constant_and_empty_masks():
    image = np.full((4, 4, 4), 7, dtype=np.int16)
    mask = np.zeros(image.shape, dtype=bool)
    mask[1:3] = True
    out, mean, std = zscore_in_mask(image, mask)
    assert out.dtype == np.float32 and np.all(np.isfinite(out)) and np.all(out == 0)
    assert mean == 7.0 and std > 0
    out, mean, std = zscore_in_mask(image, np.zeros_like(mask))
    assert np.all(out == 0) and (mean, std) == (0.0, 1.0)


@pytest.mark.parametrize("num_processes", [1, 2])
def test_out_of_convention_label_names_the_file(copy_dataset, tmp_path, num_processes):
    root = copy_dataset(LAYOUT)
    cases = discover_dataset(root).cases
    bad = cases[0]
    label, geometry = read_image(bad.label)
    label[label.shape[0] // 2, label.shape[1] // 2, label.shape[2] // 2] = 3  # 3 is not a BraTS 2021 value
    write_image_atomic(label, geometry, bad.label)
    with pytest.raises(PreprocessingError) as caught:
        preprocess_dataset(cases, make_plans(), tmp_path / "out", num_processes=num_processes, progress=False)
    message = str(caught.value)
    assert str(bad.label) in message and bad.case_id in message and "\n" not in message
    assert not (tmp_path / "out" / bad.case_id / PROPERTIES_FILE).exists()
