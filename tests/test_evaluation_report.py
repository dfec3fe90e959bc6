"""The robustness report: subset naming and column order of GMD's Table 2, ET post-processing,
tables and their averages, the report files, and `mmrobust evaluate-folder` on real NIfTI files."""

from __future__ import annotations

import csv
import dataclasses
import json

import numpy as np
import pytest

from mmseg_robust.data.labels import BRATS_2018
from mmseg_robust.data.modalities import MODALITIES
from mmseg_robust.data.modality_subsets import SubsetSpecError, select_subsets, subset_name, subset_slug, table_subsets
from mmseg_robust.data.nifti_io import ImageGeometry, write_image_atomic
from mmseg_robust.evaluation.metrics import physical_diagonal
from mmseg_robust.evaluation.scoring import RegionScore, label_regions, score_label_maps, score_regions
from mmseg_robust.evaluation.summary import (
    AVERAGE_COLUMN,
    EvaluationSummary,
    build_tables,
    format_table,
    read_per_case_csv,
    write_per_case_csv,
)


def names(subsets) -> list[str]:
    return [subset_name(s, MODALITIES) for s in subsets]


# --------------------------------------------------------------------------- naming and order
def test_table_columns_are_the_papers_in_its_order(paper_columns) -> None:
    assert names(table_subsets(MODALITIES)) + [AVERAGE_COLUMN] == paper_columns
    assert subset_slug((0, 1), MODALITIES) == "t1_flair"  # table order, canonical names


def test_subset_selection_accepts_names_lists_and_families(paper_columns) -> None:
    assert names(select_subsets("all", MODALITIES)) == paper_columns[:-1]
    assert names(select_subsets("full", MODALITIES)) == ["Full"]
    assert names(select_subsets("missing-1", MODALITIES)) == ["~T1", "~T1c", "~T2", "~Fl."]
    assert names(select_subsets("full; t1+flair;~T1;T2,Fl.;t1c,t2;flair,t1", MODALITIES)) == [
        "T2,Fl.", "T1c,T2", "T1,Fl.", "~T1", "Full"]  # table order, duplicates merged
    with pytest.raises(SubsetSpecError, match="unknown modality 'pd'"):
        select_subsets("t1+pd", MODALITIES)
    with pytest.raises(SubsetSpecError, match="the model has no t2"):
        select_subsets("t1,t2", ("flair", "t1"))
    with pytest.raises(SubsetSpecError, match="no subset given"):
        select_subsets(" ; ", MODALITIES)


# --------------------------------------------------------------------------- scoring
def _regions(shape=(12, 14, 16)) -> np.ndarray:
    regions = np.zeros((3,) + shape, dtype=bool)
    regions[0, 2:9, 3:10, 4:12] = True  # WT
    regions[1, 3:7, 4:8, 5:10] = True  # TC
    return regions


def test_et_post_processing_changes_only_et_and_keeps_it_in_the_core() -> None:
    reference = _regions()  # no ET at all
    predicted = reference.copy()
    predicted[2, 4:6, 5:7, 6:8] = True  # an 8-voxel ET inside TC
    spacing = (2.0, 1.0, 1.5)
    scores = {(s.region, s.et_min_voxels): s for s in score_regions("c", "Full", predicted, reference, spacing,
                                                                      (0, 10))}
    raw_et, post_et = scores["ET", 0], scores["ET", 10]
    assert raw_et.dice == 0.0 and raw_et.hd95 == pytest.approx(physical_diagonal((12, 14, 16), spacing))
    assert post_et.dice == 1.0 and post_et.hd95 == 0.0  # both empty after relabelling
    for region in ("WT", "TC"):  # relabelled ET stays tumour core: nothing else moves
        assert scores[region, 0] == dataclasses.replace(scores[region, 10], et_min_voxels=0)
        assert scores[region, 0].dice == 1.0
    # A threshold at or below the ET's size leaves it alone.
    kept = {(s.region, s.et_min_voxels): s for s in score_regions("c", "Full", predicted, reference, spacing, (8,))}
    assert kept["ET", 8].dice == 0.0
    penalty = score_regions("c", "Full", predicted, reference, spacing, (0,), hd95_empty_penalty=42.0)
    assert penalty[2].hd95 == 42.0


@pytest.mark.parametrize("corner", [False, True])
def test_scoring_on_the_tumour_box_equals_the_whole_volume(corner) -> None:
    """score_label_maps crops to both maps' tumour box; every number must equal the whole-volume
    computation, also when the tumour touches the volume's border."""
    rng = np.random.default_rng(int(corner))
    shape, spacing = (30, 34, 28), (2.5, 0.9, 1.2)
    maps = []
    for offset in (0, 2):
        label = np.zeros(shape, dtype=np.uint8)
        start = (0, 0, 0) if corner else (8 + offset, 10, 6 + offset)
        box = tuple(slice(a, a + 12) for a in start)
        label[box] = rng.choice(np.array([0, 1, 2, 4], dtype=np.uint8), size=(12, 12, 12), p=[0.2, 0.3, 0.3, 0.2])
        maps.append(label)
    cropped = score_label_maps("c", "Full", maps[0], BRATS_2018, maps[1], BRATS_2018, spacing, (0, 400))
    whole = score_regions("c", "Full", label_regions(maps[0], BRATS_2018), label_regions(maps[1], BRATS_2018),
                          spacing, (0, 400))
    assert len(cropped) == 6 and any(s.dice < 1 for s in cropped)
    for a, b in zip(cropped, whole):
        assert (a.region, a.et_min_voxels, a.dice, a.sensitivity, a.specificity) == (
            b.region, b.et_min_voxels, b.dice, b.sensitivity, b.specificity)
        assert a.hd95 == pytest.approx(b.hd95, abs=1e-9)
    empty = np.zeros(shape, dtype=np.uint8)
    assert all((s.dice, s.hd95) == (1.0, 0.0) for s in score_label_maps("c", "T1", empty, BRATS_2018, empty,
                                                                        BRATS_2018, spacing))
    one_empty = score_label_maps("c", "T1", empty, BRATS_2018, maps[1], BRATS_2018, spacing, (0,))
    assert one_empty[0].hd95 == pytest.approx(physical_diagonal(shape, spacing))  # the whole image's diagonal


def test_label_regions_follow_the_convention() -> None:
    label = np.array([[[0, 1, 2, 4]]], dtype=np.uint8)
    regions = label_regions(label, BRATS_2018)
    assert regions[:, 0, 0].tolist() == [[False, True, True, True], [False, True, False, True],
                                         [False, False, False, True]]
    with pytest.raises(ValueError, match=r"label values \[3\]"):
        label_regions(np.array([[[3]]]), BRATS_2018)


# --------------------------------------------------------------------------- tables
def _score(case, subset, region, dice, hd=1.0, et=0) -> RegionScore:
    return RegionScore(case, subset, region, et, dice, hd, float("nan"), 1.0, dice, hd, 1, 0, 0)


def test_tables_are_case_means_with_the_average_over_subsets(tmp_path) -> None:
    subsets = ["T1", "Full"]
    scores = [_score(c, s, r, d, hd=10 * d) for c, s, r, d in [
        ("a", "T1", "WT", 0.5), ("b", "T1", "WT", 0.7), ("a", "Full", "WT", 0.9), ("b", "Full", "WT", 1.0),
        ("a", "T1", "TC", 0.2), ("b", "T1", "TC", 0.4), ("a", "Full", "TC", 0.6), ("b", "Full", "TC", 0.8),
        ("a", "T1", "ET", 0.0), ("b", "T1", "ET", 0.1), ("a", "Full", "ET", 0.3), ("b", "Full", "ET", 0.5)]]
    scores += [_score(s.case_id, s.subset, s.region, s.dice / 2, et=500) for s in scores]
    tables = build_tables(scores, subsets)
    metrics = ["dice", "hd95", "lesion_dice", "lesion_hd95"]
    assert [(t.metric, t.et_min_voxels) for t in tables] == [(m, et) for et in (0, 500) for m in metrics]
    dice_table = tables[0]
    assert dice_table.columns == ("T1", "Full", "Avg.")
    assert dice_table.rows["WT"] == pytest.approx([0.6, 0.95, 0.775])
    assert dice_table.rows["ET"] == pytest.approx([0.05, 0.4, 0.225])
    assert tables[1].value("TC", "Full") == pytest.approx(7.0)
    assert tables[4].value("WT", "Avg.") == pytest.approx(0.3875)
    markdown = format_table(dice_table).splitlines()
    assert markdown[0] == "| Region | T1 | Full | Avg. |"
    assert markdown[2] == "| WT | 60.0 | 95.0 | 77.5 |"  # percent, one decimal, like the papers

    summary = EvaluationSummary("model", ["a", "b"], subsets, tables, ["a convention"], {"x": 1}, {"total_seconds": 2})
    summary.save(tmp_path)
    assert EvaluationSummary.load(tmp_path) == summary
    data = json.loads((tmp_path / "summary.json").read_text())
    assert data["schema_version"] == 2 and data["tables"][0]["columns"] == ["T1", "Full", "Avg."]
    write_per_case_csv(scores, tmp_path / "per_case.csv")
    back = read_per_case_csv(tmp_path / "per_case.csv")
    assert [(s.case_id, s.subset, s.region, s.et_min_voxels, s.dice) for s in back] == [
        (s.case_id, s.subset, s.region, s.et_min_voxels, pytest.approx(s.dice)) for s in scores]
    assert [(s.lesion_tp, s.lesion_fp, s.lesion_fn, s.lesion_dice) for s in back] == [
        (s.lesion_tp, s.lesion_fp, s.lesion_fn, pytest.approx(s.lesion_dice)) for s in scores]


# --------------------------------------------------------------------------- evaluate-folder
GEOMETRY = ImageGeometry(size=(16, 14, 12), spacing=(1.0, 1.5, 2.0), origin=(0.0, 0.0, 0.0),
                         direction=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))


#: Enhancing tumour inside the core: 36 voxels (kept by a 20-voxel post-processing) or 12 (removed).
LARGE_ET, SMALL_ET = (slice(3, 6), slice(4, 8), slice(5, 8)), (slice(4, 6), slice(5, 7), slice(6, 9))


def _label(et: tuple | None = None) -> np.ndarray:
    label = np.zeros(GEOMETRY.array_shape, dtype=np.uint8)
    label[2:9, 3:10, 4:12] = 2
    label[3:7, 4:8, 5:10] = 1
    if et is not None:
        label[et] = 4
    return label


@pytest.fixture
def folders(tmp_path):
    """References of two cases (BraTS case folders): A with a large ET, B without ET; predictions
    of two subsets: ``full`` finds A's ET and adds a small false ET to B, ``t1_flair`` misses A's
    ET (calls it necrosis) and gets B right."""
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    write_image_atomic(_label(LARGE_ET), GEOMETRY, ref / "A" / "A_seg.nii.gz")
    write_image_atomic(_label(), GEOMETRY, ref / "B" / "B_seg.nii.gz")
    write_image_atomic(_label(LARGE_ET), GEOMETRY, pred / "full" / "A.nii.gz")
    write_image_atomic(_label(SMALL_ET), GEOMETRY, pred / "full" / "B.nii.gz")
    write_image_atomic(_label(), GEOMETRY, pred / "t1_flair" / "A.nii.gz")
    write_image_atomic(_label(), GEOMETRY, pred / "t1_flair" / "B.nii.gz")
    return ref, pred


def test_evaluate_folder_scores_subset_folders(run_cli, folders, tmp_path) -> None:
    ref, pred = folders
    result = run_cli("evaluate-folder", "--pred", str(pred), "--ref", str(ref), "--et-min-voxels", "20",
                     "-o", str(tmp_path / "report"))
    assert result.returncode == 0, result.stderr
    assert "2 case(s) x 2 subset(s)" in result.stdout and "| Region | T1,Fl. | Full | Avg. |" in result.stdout
    report = tmp_path / "report"
    assert sorted(p.name for p in report.iterdir()) == ["per_case.csv", "robustness.png", "summary.json",
                                                        "summary.md"]
    summary = EvaluationSummary.load(report)
    assert summary.subsets == ["T1,Fl.", "Full"] and summary.settings["labels"] == "brats2018"
    raw_dice, post_dice = summary.table("dice", 0), summary.table("dice", 20)
    assert raw_dice.rows["WT"] == [1.0, 1.0, 1.0] and raw_dice.rows["TC"] == [1.0, 1.0, 1.0]
    assert raw_dice.value("ET", "T1,Fl.") == 0.5 and raw_dice.value("ET", "Full") == 0.5
    diagonal = physical_diagonal(GEOMETRY.array_shape, tuple(reversed(GEOMETRY.spacing)))
    assert summary.table("hd95", 0).value("ET", "Full") == pytest.approx(diagonal / 2)  # B: one empty
    # Post-processing removes B's small false ET (both empty: Dice 1, HD95 0) and keeps A's large one.
    assert post_dice.value("ET", "Full") == 1.0 and summary.table("hd95", 20).value("ET", "Full") == 0.0
    assert post_dice.value("ET", "T1,Fl.") == 0.5 and post_dice.rows["TC"] == raw_dice.rows["TC"]
    with open(report / "per_case.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 * 2 * 3 * 2
    row = next(r for r in rows if (r["case"], r["subset"], r["region"], r["et_min_voxels"]) == ("B", "Full", "ET", "0"))
    assert float(row["dice"]) == 0.0 and float(row["hd95"]) == pytest.approx(diagonal, abs=1e-3)
    markdown = (report / "summary.md").read_text()
    assert "373.13 mm for 240x240x155" in markdown and "ET post-processing" in markdown


def test_evaluate_folder_single_folder_and_errors(run_cli, folders, tmp_path) -> None:
    ref, pred = folders
    single = run_cli("evaluate-folder", "--pred", str(pred / "full"), "--ref", str(ref), "--subset", "T1,T1c",
                     "--hd95-empty-penalty", "50")
    assert single.returncode == 0, single.stderr
    summary = EvaluationSummary.load(pred / "full" / "evaluation")
    assert summary.subsets == ["T1,T1c"] and summary.table("dice").rows["ET"] == [0.5, 0.5]
    assert summary.table("hd95").value("ET", "T1,T1c") == 25.0  # B: the fixed penalty
    assert any("50 mm" in line for line in summary.conventions)

    (pred / "t1_pd").mkdir()
    write_image_atomic(_label(), GEOMETRY, pred / "t1_pd" / "A.nii.gz")
    bad_name = run_cli("evaluate-folder", "--pred", str(pred), "--ref", str(ref))
    assert bad_name.returncode == 1 and "Traceback" not in bad_name.stderr
    assert "unknown modality 'pd'" in bad_name.stderr and "t1_flair" in bad_name.stderr

    lonely = tmp_path / "lonely"
    write_image_atomic(_label(), GEOMETRY, lonely / "C.nii.gz")
    no_ref = run_cli("evaluate-folder", "--pred", str(lonely), "--ref", str(ref))
    assert no_ref.returncode == 1 and "no reference for 1 predicted case(s), e.g. C" in no_ref.stderr

    shifted = tmp_path / "shifted"
    write_image_atomic(_label(), ImageGeometry(GEOMETRY.size, (1.0, 1.5, 2.5), GEOMETRY.origin, GEOMETRY.direction),
                       shifted / "A.nii.gz")
    mismatch = run_cli("evaluate-folder", "--pred", str(shifted), "--ref", str(ref))
    assert mismatch.returncode == 1 and f"{shifted / 'A.nii.gz'}: geometry differs" in mismatch.stderr
