"""Dataset fingerprint on real synthetic NIfTI files, checked against numpy/nibabel computed here."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from mmseg_robust.planners.fingerprint import (
    FINGERPRINT_SCHEMA_VERSION,
    DatasetFingerprint,
    FingerprintError,
    extract_fingerprint,
    fingerprint_case,
)

from mmseg_robust.data.discovery import RawDataset, discover_dataset
from mmseg_robust.data.labels import NNUNET_BRATS
from mmseg_robust.data.modalities import MODALITIES
from mmseg_robust.data.synthetic.writer import SyntheticSpec, make_synthetic_dataset

#: Anisotropic on purpose: a z/x mix-up in shape or spacing order shows.
SHAPE = (20, 48, 48)
SPACING = (2.0, 1.0, 1.0)
N_CASES = 4
#: Larger than any case's brain, so the "sample" is every brain voxel.
ALL_VOXELS = 10**6


@pytest.fixture(scope="module")
def aniso_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fingerprint") / "aniso"
    spec = SyntheticSpec("brats2021", N_CASES, SHAPE, SPACING, seed=5)
    return make_synthetic_dataset(root, spec, progress=False)


@pytest.fixture(scope="module")
def aniso(aniso_root: Path) -> RawDataset:
    return discover_dataset(aniso_root)


@pytest.fixture(scope="module")
def fingerprint(aniso: RawDataset) -> DatasetFingerprint:
    return extract_fingerprint(aniso, "Aniso", progress=False)


def nib_zyx(path: Path) -> np.ndarray:
    """Voxels read with nibabel directly, transposed from (i, j, k) = (x, y, z) to (z, y, x)."""
    return np.asanyarray(nib.load(str(path)).dataobj).T


def independent_brain(case) -> np.ndarray:
    mask = np.zeros(SHAPE, dtype=bool)
    for path in case.images.values():
        mask |= nib_zyx(path) != 0
    return mask


def test_crop_box_matches_box_from_raw_files(aniso: RawDataset, fingerprint: DatasetFingerprint) -> None:
    for case in aniso.cases:
        files = sorted(case.images.values()) + [case.label]
        union = np.zeros(SHAPE, dtype=bool)
        for path in files:
            union |= nib_zyx(path) != 0
        nonzero = np.argwhere(union)
        expected = tuple((int(lo), int(hi) + 1) for lo, hi in zip(nonzero.min(axis=0), nonzero.max(axis=0)))
        fp = fingerprint.case(case.case_id)
        assert fp.crop_box == expected
        assert fp.cropped_shape == tuple(hi - lo for lo, hi in expected)
        # A real crop: the synthetic brain does not touch every border.
        assert fp.cropped_shape != SHAPE


def test_crop_box_includes_label_voxels_outside_the_brain(aniso_root: Path, tmp_path: Path) -> None:
    root = Path(shutil.copytree(aniso_root, tmp_path / "stray"))
    case_dir = sorted(p for p in root.iterdir() if p.is_dir())[0]
    label_path = case_dir / f"{case_dir.name}_seg.nii.gz"
    label = sitk.ReadImage(str(label_path))
    array = sitk.GetArrayFromImage(label)
    array[0, 0, 0] = 2  # a stray label voxel in the corner, where every image is background
    stray = sitk.GetImageFromArray(array)
    stray.CopyInformation(label)
    sitk.WriteImage(stray, str(label_path))
    fingerprint = extract_fingerprint(discover_dataset(root), "Stray", progress=False)
    fp = fingerprint.case(case_dir.name)
    assert [start for start, _ in fp.crop_box] == [0, 0, 0]
    assert fp.label_counts["2"] == int((array == 2).sum())


def test_shape_spacing_and_orientation_in_stated_order(aniso: RawDataset,
                                                       fingerprint: DatasetFingerprint) -> None:
    for case in aniso.cases:
        fp = fingerprint.case(case.case_id)
        header = sitk.ReadImage(str(case.images["flair"]))
        assert fp.shape == SHAPE
        assert fp.spacing == SPACING
        assert np.allclose(fp.origin, header.GetOrigin())
        assert np.allclose(fp.direction, header.GetDirection())
        assert fp.modalities == MODALITIES
    assert fingerprint.median_spacing == SPACING
    assert fingerprint.median_shape == SHAPE
    assert fingerprint.spacings_identical is True
    assert fingerprint.modalities == MODALITIES
    assert fingerprint.layout == "brats2021"
    assert fingerprint.label_convention.et == 4
    expected_cropped = np.median([fingerprint.case(c.case_id).cropped_shape for c in aniso.cases], axis=0)
    assert fingerprint.median_cropped_shape == tuple(expected_cropped)


def test_one_case_at_another_spacing_is_not_identical(aniso_root: Path, tmp_path: Path) -> None:
    root = Path(shutil.copytree(aniso_root, tmp_path / "mixed"))
    odd = sorted(p for p in root.iterdir() if p.is_dir())[0]
    for path in odd.glob("*.nii.gz"):
        image = sitk.ReadImage(str(path))
        image.SetSpacing((1.0, 1.0, 1.5))  # ITK order: z becomes 1.5 mm
        sitk.WriteImage(image, str(path))
    fingerprint = extract_fingerprint(discover_dataset(root), "Mixed", progress=False)
    assert fingerprint.case(odd.name).spacing == (1.5, 1.0, 1.0)
    assert fingerprint.spacings_identical is False
    assert fingerprint.median_spacing == SPACING  # three of four cases still at 2 mm


@pytest.mark.parametrize("layout", ["brats2018", "nnunet"])
def test_label_and_region_counts_match_numpy(layout: str, synthetic_datasets: dict[str, Path]) -> None:
    dataset = discover_dataset(synthetic_datasets[layout])
    fingerprint = extract_fingerprint(dataset, layout, samples_per_case=100, progress=False)
    convention = dataset.layout.convention
    if layout == "nnunet":
        assert convention == NNUNET_BRATS  # ET is 3, edema 1: counts must follow the convention
    for case in dataset.cases:
        label = nib_zyx(case.label)
        values, counts = np.unique(label, return_counts=True)
        fp = fingerprint.case(case.case_id)
        assert fp.label_counts == {str(int(v)): int(c) for v, c in zip(values, counts)}
        assert fp.region_counts == {
            "WT": int(np.isin(label, [convention.ncr, convention.edema, convention.et]).sum()),
            "TC": int(np.isin(label, [convention.ncr, convention.et]).sum()),
            "ET": int((label == convention.et).sum())}
    # Regions that differ in size make a convention mix-up visible.
    regions = [fingerprint.case(c.case_id).region_counts for c in dataset.cases]
    assert any(0 < r["ET"] < r["TC"] < r["WT"] for r in regions)


def test_sampled_intensity_statistics_close_to_all_brain_voxels(aniso: RawDataset,
                                                                fingerprint: DatasetFingerprint) -> None:
    case = aniso.cases[0]
    brain = independent_brain(case)
    assert brain.sum() > fingerprint.samples_per_case  # really a sample
    for modality, path in case.images.items():
        values = nib_zyx(path)[brain].astype(np.float64)
        stats = fingerprint.case(case.case_id).intensity[modality]
        assert stats.n_samples == fingerprint.samples_per_case
        assert stats.mean == pytest.approx(values.mean(), rel=0.03)
        assert stats.std == pytest.approx(values.std(), rel=0.05)
        assert stats.median == pytest.approx(np.median(values), rel=0.05)


def test_intensity_statistics_exact_when_sample_covers_the_brain(aniso: RawDataset) -> None:
    fingerprint = extract_fingerprint(aniso, "Aniso", samples_per_case=ALL_VOXELS, progress=False)
    pooled = {m: [] for m in MODALITIES}
    for case in aniso.cases:
        brain = independent_brain(case)
        for modality, path in case.images.items():
            values = nib_zyx(path)[brain].astype(np.float64)
            pooled[modality].append(values)
            stats = fingerprint.case(case.case_id).intensity[modality]
            assert stats.n_samples == brain.sum()
            assert stats.mean == pytest.approx(values.mean(), rel=1e-12)
            assert stats.std == pytest.approx(values.std(), rel=1e-12)
            assert stats.median == np.median(values)
            assert stats.percentile_00_5 == pytest.approx(np.percentile(values, 0.5), rel=1e-12)
            assert stats.percentile_99_5 == pytest.approx(np.percentile(values, 99.5), rel=1e-12)
    for modality, parts in pooled.items():
        values = np.concatenate(parts)
        assert fingerprint.intensity[modality].n_samples == values.size
        assert fingerprint.intensity[modality].mean == pytest.approx(values.mean(), rel=1e-12)
        assert fingerprint.intensity[modality].percentile_99_5 == pytest.approx(np.percentile(values, 99.5))


def test_same_bytes_for_one_or_two_processes_and_any_case_order(aniso: RawDataset, tmp_path: Path) -> None:
    one = extract_fingerprint(aniso, "Aniso", num_processes=1, seed=3, progress=False)
    two = extract_fingerprint(aniso, "Aniso", num_processes=2, seed=3, progress=False)
    one, two = one.save(tmp_path / "1.json"), two.save(tmp_path / "2.json")
    assert one.read_bytes() == two.read_bytes()
    reordered = dataclasses.replace(aniso, cases=tuple(reversed(aniso.cases)))
    backwards = extract_fingerprint(reordered, "Aniso", seed=3, progress=False)
    forwards = DatasetFingerprint.load(one)
    for case in forwards.cases:
        assert backwards.case(case.case_id) == case
    other_seed = extract_fingerprint(aniso, "Aniso", seed=4, progress=False)
    assert other_seed.cases[0].intensity != forwards.cases[0].intensity


def test_case_sample_is_a_seeded_subset_of_brain_voxels_keyed_by_case_id(aniso: RawDataset) -> None:
    case = aniso.cases[0]
    brain_values = nib_zyx(case.images["t1"])[independent_brain(case)]
    # One voxel fewer than the brain: drawn without replacement, the sample is all but one voxel.
    n = brain_values.size - 1
    fp, samples = fingerprint_case(case, seed=0, samples_per_case=n)
    assert set(samples) == set(case.modalities)
    assert samples["t1"].size == n == fp.intensity["t1"].n_samples
    drawn, drawn_counts = np.unique(samples["t1"], return_counts=True)
    brain, brain_counts = np.unique(brain_values, return_counts=True)
    available = dict(zip(brain.tolist(), brain_counts.tolist()))
    assert all(k <= available[v] for v, k in zip(drawn.tolist(), drawn_counts.tolist()))
    again, _ = fingerprint_case(case, seed=0, samples_per_case=500)
    renamed, _ = fingerprint_case(dataclasses.replace(case, case_id="Renamed_00001"), seed=0,
                                  samples_per_case=500)
    assert again.intensity == fingerprint_case(case, seed=0, samples_per_case=500)[0].intensity
    assert renamed.intensity != again.intensity  # the case ID is part of the sample's seed


def test_save_load_round_trip(fingerprint: DatasetFingerprint, tmp_path: Path) -> None:
    path = fingerprint.save(tmp_path / "sub" / "fingerprint.json")
    loaded = DatasetFingerprint.load(path)
    assert loaded == fingerprint
    assert loaded.to_dict() == fingerprint.to_dict()
    assert json.loads(path.read_text())["schema_version"] == FINGERPRINT_SCHEMA_VERSION
    assert [p.name for p in path.parent.iterdir()] == ["fingerprint.json"]  # no temporary left


@pytest.mark.parametrize("damage", ["other_schema", "missing_key", "not_json", "absent"])
def test_bad_fingerprint_files_raise_one_line(damage: str, fingerprint: DatasetFingerprint,
                                              tmp_path: Path) -> None:
    path = tmp_path / "fingerprint.json"
    data = fingerprint.to_dict()
    if damage == "other_schema":
        data["schema_version"] = FINGERPRINT_SCHEMA_VERSION + 1
        path.write_text(json.dumps(data))
    elif damage == "missing_key":
        del data["cases"][1]["crop_box"]
        path.write_text(json.dumps(data))
    elif damage == "not_json":
        path.write_text(json.dumps(data)[:200])
    with pytest.raises(FingerprintError) as raised:
        DatasetFingerprint.load(path)
    message = str(raised.value)
    assert str(path) in message and "\n" not in message
    if damage == "other_schema":
        assert f"schema version {FINGERPRINT_SCHEMA_VERSION + 1}" in message


def test_incomplete_cases_list_their_modalities_and_pool_only_their_samples(tmp_path: Path) -> None:
    spec = SyntheticSpec("brats2021", N_CASES, SHAPE, SPACING, seed=8, incomplete_fraction=0.5)
    dataset = discover_dataset(make_synthetic_dataset(tmp_path / "incomplete", spec, progress=False))
    fingerprint = extract_fingerprint(dataset, "Incomplete", samples_per_case=ALL_VOXELS, progress=False)
    incomplete = [c for c in dataset.cases if len(c.modalities) < len(MODALITIES)]
    assert len(incomplete) == 2
    for case in dataset.cases:
        fp = fingerprint.case(case.case_id)
        # Independently of discovery: the modality tokens of the files in the case folder.
        folder = dataset.root / case.case_id
        tokens = {p.name[len(case.case_id) + 1:-len(".nii.gz")] for p in folder.iterdir()}
        assert fp.modalities == tuple(m for m in MODALITIES if m in tokens)
        assert tuple(fp.intensity) == fp.modalities
    assert fingerprint.modalities == MODALITIES
    for modality in MODALITIES:
        having = [fingerprint.case(c.case_id) for c in dataset.cases if modality in c.images]
        pooled = fingerprint.intensity[modality]
        counts = [fp.intensity[modality].n_samples for fp in having]
        assert pooled.n_samples == sum(counts)
        weighted = sum(n * fp.intensity[modality].mean for n, fp in zip(counts, having)) / sum(counts)
        assert pooled.mean == pytest.approx(weighted, rel=1e-9)
    assert min(sum(m in fp.modalities for fp in fingerprint.cases) for m in MODALITIES) < N_CASES
