"""BraTS 2024 GLI post-treatment labels (4 = resection cavity) on generated 2024-style cases: the layout
and the label values decide what label 4 means, an undecidable dataset stops with one line until the
user states it, RC is background for WT/TC/ET, and preprocessing and training run with RC present."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from mmseg_robust.planners.fingerprint import DatasetFingerprint
from mmseg_robust.planners.plans import Plans
from scipy import ndimage

from mmseg_robust.data.discovery import discover_dataset
from mmseg_robust.data.labels import (
    BRATS_2018,
    BRATS_2023,
    BRATS_2024_GLI,
    NNUNET_BRATS,
    LabelConvention,
    LabelConventionError,
    convention_from_nnunet_labels,
    label_4_as_in,
    label_to_subregions,
    resection_cavity_mask,
    subregions_to_regions,
)
from mmseg_robust.data.nifti_io import read_image
from mmseg_robust.data.synthetic.writer import SyntheticDatasetError, SyntheticSpec, make_synthetic_dataset
from mmseg_robust.data.verify import verify_dataset
from mmseg_robust.errors import MMRobustError
from mmseg_robust.evaluation.scoring import label_regions
from mmseg_robust.plan_and_preprocess import DatasetLocation, run_preprocess

SHAPE = (32, 40, 40)
CASES = 4


@pytest.fixture(scope="module")
def post_treatment(tmp_path_factory) -> dict[str, Path]:
    """BraTS 2024 GLI-style data in BraTS 2023+ names and in the nnU-Net layout (read-only: copy first)."""
    root = tmp_path_factory.mktemp("post_treatment")
    return {layout: make_synthetic_dataset(root / layout, SyntheticSpec(layout, CASES, SHAPE, seed=1,
                                                                        post_treatment=True), progress=False)
            for layout in ("brats2023", "nnunet")}


def copy_of(source: Path, tmp_path: Path, name: str = "PT") -> Path:
    target = tmp_path / "raw" / name
    shutil.copytree(source, target)
    return target


def relabel(path: Path, old: int, new: int) -> None:
    image = sitk.ReadImage(str(path))
    array = sitk.GetArrayFromImage(image)
    array[array == old] = new
    result = sitk.GetImageFromArray(array)
    result.CopyInformation(image)
    sitk.WriteImage(result, str(path))


def problem_lines(stdout: str) -> list[str]:
    """Every output line of ``verify`` but the closing summary."""
    return stdout.strip().splitlines()[:-1]


def test_rc_is_background_for_wt_tc_et_hand_checked() -> None:
    label = np.array([[[0, 1, 2, 3, 4, 4]]], dtype=np.uint8)
    codes = label_to_subregions(label, BRATS_2024_GLI)
    assert codes.ravel().tolist() == [0, 1, 2, 3, 0, 0]
    wt, tc, et = subregions_to_regions(codes)
    assert wt.ravel().tolist() == [False, True, True, True, False, False]
    assert tc.ravel().tolist() == [False, True, False, True, False, False]
    assert et.ravel().tolist() == [False, False, False, True, False, False]
    # Evaluation's conversion goes through the same function, so it leaves RC out too.
    assert np.array_equal(label_regions(label, BRATS_2024_GLI), np.stack([wt, tc, et]))
    assert resection_cavity_mask(label, BRATS_2024_GLI).ravel().tolist() == [False] * 4 + [True] * 2
    assert not resection_cavity_mask(np.zeros((2, 2, 2)), BRATS_2024_GLI).any()
    assert resection_cavity_mask(label, BRATS_2023) is None and resection_cavity_mask(label, BRATS_2018) is None
    # In BraTS 2018-2021 labels the same 4 is enhancing tumour, in all three regions.
    assert [r.ravel().tolist()[4] for r in label_regions(np.where(label == 3, 1, label), BRATS_2018)] == [True] * 3
    with pytest.raises(ValueError, match=r"label values \[4\] outside the brats2023 convention"):
        label_to_subregions(label, BRATS_2023)


def test_conventions_serialise_and_old_json_reads_as_no_rc() -> None:
    assert "rc" not in BRATS_2023.to_dict()  # artifacts without RC keep their bytes
    assert LabelConvention.from_dict({"name": "brats2023", "ncr": 1, "edema": 2, "et": 3}).rc is None
    assert LabelConvention.from_dict(BRATS_2024_GLI.to_dict()) == BRATS_2024_GLI
    assert BRATS_2024_GLI.allowed_values == {0, 1, 2, 3, 4}
    named = convention_from_nnunet_labels({"background": 0, "NETC": 1, "SNFH": 2, "ET": 3, "RC": 4}, "d.json")
    assert (named.ncr, named.edema, named.et, named.rc) == (1, 2, 3, 4)
    regions = convention_from_nnunet_labels({"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3],
                                             "enhancing tumor": [3], "resection cavity": 4}, "d.json")
    assert regions == LabelConvention("nnunet", ncr=2, edema=1, et=3, rc=4)
    assert label_4_as_in(BRATS_2023, BRATS_2024_GLI) == BRATS_2024_GLI
    assert label_4_as_in(BRATS_2018, BRATS_2024_GLI) == BRATS_2018


def test_synthetic_cases_have_a_cavity_beside_the_tumour(post_treatment) -> None:
    dataset = discover_dataset(post_treatment["brats2023"])
    assert [c.case_id for c in dataset.cases][0] == "BraTS-GLI-00001-000"
    for case in dataset.cases:
        label, _ = read_image(case.label)
        assert set(np.unique(label).tolist()) <= {0, 1, 2, 3, 4}
        cavity = label == 4
        assert cavity.sum() > 20, case.case_id
        assert (ndimage.binary_dilation(cavity) & np.isin(label, [1, 2, 3])).any(), "cavity away from the tumour"
    assert any(3 in np.unique(read_image(c.label)[0]) for c in dataset.cases)  # high-grade cases keep ET
    with pytest.raises(SyntheticDatasetError, match="--post-treatment needs --layout brats2023 or nnunet"):
        SyntheticSpec("brats2021", 2, SHAPE, post_treatment=True)


def test_verify_reads_4_as_the_resection_cavity_and_reports_it(post_treatment) -> None:
    dataset = discover_dataset(post_treatment["brats2023"])
    assert dataset.layout.convention == BRATS_2023  # discovery reads no voxels: verification decides
    report = verify_dataset(dataset, progress=False)
    assert report.ok, [str(p) for p in report.problems]
    assert report.dataset.layout.convention == BRATS_2024_GLI
    assert {c.convention for c in report.dataset.cases} == {BRATS_2024_GLI}
    expected = {}
    for case in dataset.cases:
        label, geometry = read_image(case.label)
        expected[case.case_id] = int((label == 4).sum()) * float(np.prod(geometry.spacing)) / 1000
    assert report.rc_volumes_ml == pytest.approx(expected)
    assert f"brats2024-gli labels: resection cavity (4) in {CASES} of {CASES} cases, median" in report.summary()
    nnunet = verify_dataset(discover_dataset(post_treatment["nnunet"]), progress=False)
    assert nnunet.ok and nnunet.dataset.layout.convention == replace_rc(NNUNET_BRATS)


def replace_rc(convention: LabelConvention) -> LabelConvention:
    return LabelConvention(convention.name, convention.ncr, convention.edema, convention.et, rc=4)


def test_undecidable_label_4_stops_with_one_line_until_stated(post_treatment, tmp_path, run_cli) -> None:
    root = copy_of(post_treatment["brats2023"], tmp_path)
    for case in discover_dataset(root).cases:
        relabel(case.label, 3, 1)  # no ET anywhere: 4 could be 2018-style ET or the cavity
    first = root / "BraTS-GLI-00001-000" / "BraTS-GLI-00001-000-seg.nii.gz"
    result = run_cli("verify", "-d", root.name, "--raw", root.parent)
    assert result.returncode == 1 and "Traceback" not in result.stdout + result.stderr
    (line,) = problem_lines(result.stdout)
    assert line.startswith(f"{first}: label 4 (this case and 3 more) but no label 3 in any case")
    assert line.endswith("state which with --label-4 rc or --label-4 et")
    stopped = run_cli("plan_and_preprocess", "-d", root.name, "--raw", root.parent, "--preprocessed",
                      tmp_path / "pre")
    assert stopped.returncode == 1 and "Traceback" not in stopped.stderr
    assert [x for x in stopped.stderr.splitlines() if "--label-4 rc" in x and x.startswith(str(first))]
    assert not (tmp_path / "pre" / root.name / "fingerprint.json").exists()
    as_rc = run_cli("verify", "-d", root.name, "--raw", root.parent, "--label-4", "rc")
    assert as_rc.returncode == 0, as_rc.stdout
    assert "brats2024-gli labels: resection cavity (4) in 4 of 4 cases" in as_rc.stdout
    as_et = verify_dataset(discover_dataset(root, label_4="et"), progress=False)
    assert as_et.ok and as_et.dataset.layout.convention == BRATS_2018


def test_nnunet_needs_dataset_json_to_name_the_cavity(post_treatment, tmp_path) -> None:
    root = copy_of(post_treatment["nnunet"], tmp_path)
    meta = json.loads((root / "dataset.json").read_text())
    del meta["labels"]["resection cavity"]
    (root / "dataset.json").write_text(json.dumps(meta))
    report = verify_dataset(discover_dataset(root), progress=False)
    (problem,) = report.problems
    assert str(problem).startswith(f"{root / 'labelsTr' / 'BraTS2021_00001.nii.gz'}: label values [4] outside "
                                   f"the nnunet convention [0, 1, 2, 3] (this case and 3 more)")
    assert "(\"resection cavity\": 4) or pass --label-4 rc" in str(problem)
    stated = verify_dataset(discover_dataset(root, label_4="rc"), progress=False)
    assert stated.ok and stated.dataset.layout.convention == replace_rc(NNUNET_BRATS)
    with pytest.raises(LabelConventionError, match="--label-4 et contradicts the nnunet labels, where ET is 3"):
        discover_dataset(root, label_4="et")


def test_brats2018_names_still_read_4_as_enhancing_tumour(tmp_path, run_cli) -> None:
    root = make_synthetic_dataset(tmp_path / "raw" / "B18", SyntheticSpec("brats2018", 2, SHAPE, seed=1),
                                  progress=False)
    report = verify_dataset(discover_dataset(root), progress=False)
    assert report.ok and report.dataset.layout.convention == BRATS_2018
    assert "resection cavity" not in report.summary()
    case = report.dataset.cases[0]
    label, _ = read_image(case.label)
    assert (label == 4).any()
    assert np.array_equal(label_regions(label, case.convention)[2], label == 4)
    contradiction = run_cli("verify", "-d", "B18", "--raw", root.parent, "--label-4", "rc")
    assert contradiction.returncode == 1 and contradiction.stdout == ""
    assert contradiction.stderr.strip().splitlines() == [
        f"Error: {root}: --label-4 rc contradicts the brats2018 labels, where 4 is enhancing tumour; "
        f"leave --label-4 out"]


def test_preprocess_and_train_with_the_cavity_present(post_treatment, tmp_path, run_cli) -> None:
    root = copy_of(post_treatment["brats2023"], tmp_path)
    env = {"MMROBUST_RAW": str(root.parent), "MMROBUST_PREPROCESSED": str(tmp_path / "pre"),
           "MMROBUST_RESULTS": str(tmp_path / "results")}
    planned = run_cli("plan_and_preprocess", "-d", "PT", "-c", "2d", "--base-features", "4", env=env)
    assert planned.returncode == 0, planned.stderr
    pre = tmp_path / "pre" / "PT"
    fingerprint = DatasetFingerprint.load(pre / "fingerprint.json")
    plans = Plans.load(pre / "plans.json")
    assert fingerprint.label_convention == plans.label_convention == BRATS_2024_GLI
    assert "resection cavity (4) in 4 of 4 cases" in planned.stderr
    for case in discover_dataset(root).cases:
        label, _ = read_image(case.label)
        counts = fingerprint.case(case.case_id).region_counts
        assert counts["WT"] == int(np.isin(label, [1, 2, 3]).sum())  # RC is no tumour
        stored = json.loads((pre / "data_1x1x1" / case.case_id / "properties.json").read_text())
        box = tuple(slice(a, b) for a, b in stored["crop_box"])
        seg = np.load(pre / "data_1x1x1" / case.case_id / "seg.npy")
        assert np.array_equal(seg, label_to_subregions(label[box], BRATS_2024_GLI))
        assert (label[box] == 4).any() and not seg[label[box] == 4].any()
    trained = run_cli("train", "-d", "PT", "-c", "2d", "-f", "0", "--epochs", "1", "--iters-per-epoch", "2",
                      "--num-workers", "0", "--device", "cpu", "--val-patches-per-case", "1", "--strategy", "plain",
                      env=env)
    assert trained.returncode == 0, trained.stderr
    assert list((tmp_path / "results" / "PT").glob("2d__plain__*/fold_0/checkpoint_latest.pt"))
    # Scored against references holding the cavity: read with the trained convention, RC in no
    # region, no RC row (the network does not predict it), and the report says so.
    evaluated = run_cli("evaluate", "-d", "PT", "-c", "2d", "-f", "0", "--strategy", "plain", "--checkpoint",
                        "latest", "--subsets", "full", "-o", tmp_path / "evaluation", "-np", "0", env=env)
    assert evaluated.returncode == 0, evaluated.stderr
    assert "Dice (%), raw prediction" in evaluated.stdout  # a BraTS 2023+-layout dataset prints both tables
    assert "Lesion-wise Dice (%), raw prediction" in evaluated.stdout
    rows = (tmp_path / "evaluation" / "per_case.csv").read_text().splitlines()
    assert {row.split(",")[2] for row in rows[1:]} == {"WT", "TC", "ET"}
    assert "resection cavity (label 4) is background here" in (tmp_path / "evaluation" / "summary.md").read_text()
    for written in (tmp_path / "evaluation" / "predictions").glob("*/*.nii.gz"):
        assert not (read_image(written)[0] == 4).any()
    # Plans made with one reading of label 4 never preprocess data read with another.
    location = DatasetLocation("PT", root, pre)
    with pytest.raises(MMRobustError, match="planned with the brats2024-gli labels, but .* reads as brats2023"):
        run_preprocess(location, discover_dataset(root), ["2d"], progress=False)
