"""``mmrobust evaluate-folder`` with lesion-wise metrics and post-treatment references, through the
command line on NIfTI files: the lesion tables and per-case counts, the convention named in the
outputs, and the resection cavity scored as its own region, never as ET."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from mmseg_robust.data.labels import BRATS_2023, BRATS_2024_GLI
from mmseg_robust.data.nifti_io import ImageGeometry, write_image_atomic
from mmseg_robust.evaluation.lesions import LESION_CONVENTIONS, lesion_scores
from mmseg_robust.evaluation.scoring import label_regions

SHAPE = (24, 48, 48)
GEOMETRY = ImageGeometry(size=SHAPE[::-1], spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0),
                         direction=tuple(np.eye(3).ravel()))


def _reference() -> np.ndarray:
    """Two tumours (edema around a core with ET) far apart, and a cavity beside the first."""
    label = np.zeros(SHAPE, np.uint8)
    for z, y, x in ((10, 12, 12), (10, 34, 34)):
        label[z - 4:z + 4, y - 6:y + 6, x - 6:x + 6] = 2
        label[z - 3:z + 3, y - 3:y + 3, x - 3:x + 3] = 1
        label[z - 2:z + 2, y - 2:y + 2, x - 2:x + 2] = 3  # 64 voxels: over 2023's 50 mm3
    label[6:14, 2:5, 26:34] = 4
    return label


def _write(folder: Path, case: str, label: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    write_image_atomic(label, GEOMETRY, folder / f"{case}.nii.gz")


@pytest.fixture()
def folders(tmp_path):
    reference = _reference()
    missed_second = reference.copy()
    missed_second[:, 24:, 24:] = 0  # the second tumour missed
    missed_second[20:22, 40:44, 2:6] = 2  # and a small false-positive lesion
    _write(tmp_path / "ref", "BraTS-GLI-00001-000", reference)
    _write(tmp_path / "ref", "BraTS-GLI-00002-000", reference)
    _write(tmp_path / "pred", "BraTS-GLI-00001-000", reference)
    _write(tmp_path / "pred", "BraTS-GLI-00002-000", missed_second)
    return tmp_path, reference, missed_second


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("convention", ["brats2023", "brats2024"])
def test_evaluate_folder_reports_lesion_wise_metrics_and_the_cavity(folders, run_cli, convention) -> None:
    tmp_path, reference, missed_second = folders
    out = tmp_path / f"evaluation_{convention}"
    result = run_cli("evaluate-folder", "--pred", tmp_path / "pred", "--ref", tmp_path / "ref", "-o", out,
                     "--lesion-convention", convention, "--et-min-voxels", "0", "-np", "0")
    assert result.returncode == 0, result.stderr
    assert "Lesion-wise Dice (%), raw prediction" in result.stdout
    assert f"Lesion-wise convention: {convention}" in result.stdout

    rows = {(r["case"], r["region"]): r for r in _rows(out / "per_case.csv")}
    # auto: label 4 beside label 3 is the cavity, scored as RC and kept out of WT/TC/ET.
    assert {region for _, region in rows} == {"WT", "TC", "ET", "RC"}
    perfect, partial = "BraTS-GLI-00001-000", "BraTS-GLI-00002-000"
    assert float(rows[(perfect, "RC")]["dice"]) == 1.0 and float(rows[(partial, "RC")]["dice"]) == 1.0
    assert float(rows[(perfect, "ET")]["dice"]) == 1.0  # RC would have broken ET were it read as ET
    for region_index, region in enumerate(("WT", "TC", "ET")):
        expected = lesion_scores(label_regions(missed_second, BRATS_2024_GLI)[region_index],
                                 label_regions(reference, BRATS_2024_GLI)[region_index], (1.0, 1.0, 1.0),
                                 LESION_CONVENTIONS[convention])
        row = rows[(partial, region)]
        assert float(row["lesion_dice"]) == pytest.approx(expected.dice, abs=1e-6)
        assert float(row["lesion_hd95"]) == pytest.approx(expected.hd95, abs=1e-4)
        assert (int(row["lesion_tp"]), int(row["lesion_fp"]), int(row["lesion_fn"])) == (
            expected.tp, expected.fp, expected.fn)
    # Hand-checked for ET: one of two lesions found, none spurious (the false positive is edema).
    et = rows[(partial, "ET")]
    assert (int(et["lesion_tp"]), int(et["lesion_fp"]), int(et["lesion_fn"])) == (1, 0, 1)
    assert float(et["lesion_dice"]) == pytest.approx(0.5 if convention == "brats2023" else 1.0)
    wt = rows[(partial, "WT")]
    assert (int(wt["lesion_tp"]), int(wt["lesion_fp"]), int(wt["lesion_fn"])) == (1, 1, 1)

    summary = json.loads((out / "summary.json").read_text())
    assert summary["schema_version"] == 2 and summary["settings"]["lesion_convention"] == convention
    assert {t["metric"] for t in summary["tables"]} == {"dice", "hd95", "lesion_dice", "lesion_hd95"}
    markdown = (out / "summary.md").read_text()
    assert "## Lesion-wise HD95 (mm), raw prediction" in markdown and "| RC |" in markdown
    assert f"Lesion-wise Dice and HD95 ({convention})" in markdown


def test_references_without_a_cavity_read_as_2023_and_a_bad_convention_is_refused(tmp_path, run_cli) -> None:
    label = _reference()
    label[label == 4] = 0
    _write(tmp_path / "ref", "case", label)
    _write(tmp_path / "pred", "case", label)
    result = run_cli("evaluate-folder", "--pred", tmp_path / "pred", "--ref", tmp_path / "ref", "-np", "0")
    assert result.returncode == 0, result.stderr
    rows = _rows(tmp_path / "pred" / "evaluation" / "per_case.csv")
    assert {r["region"] for r in rows} == {"WT", "TC", "ET"}
    assert json.loads((tmp_path / "pred" / "evaluation" / "summary.json").read_text())["settings"]["labels"] \
        == BRATS_2023.name
    refused = run_cli("evaluate-folder", "--pred", tmp_path / "pred", "--ref", tmp_path / "ref",
                      "--lesion-convention", "brats2025")
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert "brats2023" in refused.stderr.strip().splitlines()[-1]
