"""`mmrobust evaluate`: scoring speed against MONAI's metrics, and the shared pass against
predicting every subset on its own.

    .venv/bin/python benchmarks/bench_evaluation.py [--threads 2] [--repeats 3] [--skip-prediction]
        [--only-commands]

One synthetic BraTS-sized case (155 x 240 x 240, all four sequences) is generated in a temporary
folder; its segmentation is the reference and a shifted, eroded copy the prediction.

* Scoring table: Dice and HD95 of WT, TC and ET for one label-map pair (what one case under one
  subset costs), median of ``--repeats``: mmrobust on the tumours' bounding box, mmrobust on the
  whole volume (the same code without the crop), and MONAI's ``DiceMetric`` plus
  ``HausdorffDistanceMetric(percentile=95)`` on the whole volume (the baseline).
* Lesion-wise table: the same pair's whole-volume metrics alone (Dice, HD95, sensitivity,
  specificity of the three regions on the tumour box; the baseline), its lesion-wise Dice and HD95
  alone under each convention, and everything ``evaluate`` computes per pair.
* Prediction table (needs `make demo`'s 3D model): all 15 subsets of the case with the shared
  protocol (one pass per modality) and with the per-subset protocol (each subset prepared and
  predicted on its own, Σ|S| = 32 branch passes), and how many voxels their label maps share.
* Commands table (needs `make demo`'s 2D model and data): ``mmrobust evaluate`` (all 15 subsets,
  shared protocol, scoring included) against ``mmrobust predict`` (all four sequences) on the
  validation cases of fold 0, each a fresh process writing into a fresh folder, run alternately,
  median of ``--repeats``; the ratio is what the 15 subsets cost over one full prediction.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from mmseg_robust.inference.inputs import find_input_cases
from mmseg_robust.inference.predictor import PredictionSettings, Predictor
from monai.metrics import DiceMetric, HausdorffDistanceMetric
from scipy import ndimage

from mmseg_robust.data.boxes import bounding_box, box_slices
from mmseg_robust.data.labels import BRATS_2018
from mmseg_robust.data.nifti_io import read_image
from mmseg_robust.data.synthetic.writer import SyntheticSpec, make_synthetic_dataset
from mmseg_robust.evaluation.cases import dataset_cases
from mmseg_robust.evaluation.lesions import LESION_CONVENTIONS, lesion_scores
from mmseg_robust.evaluation.metrics import dice, hd95
from mmseg_robust.evaluation.scoring import label_regions, score_label_maps, score_regions
from mmseg_robust.evaluation.subset_prediction import PredictionStore, SubsetPredictor, evaluation_subsets

DEMO = Path("demo_data")
RUN = DEMO / "results" / "BraTS2018" / "3d_fullres__plain__weightedfusion" / "fold_0"
RUN_2D = DEMO / "results" / "BraTS2018" / "2d__plain__weightedfusion" / "fold_0"
SPACING = (1.0, 1.0, 1.0)


def prediction_like(reference: np.ndarray) -> np.ndarray:
    """A plausible prediction: the reference shifted by 2 voxels and with its ET eroded."""
    predicted = np.roll(reference, (2, -2, 1), axis=(0, 1, 2))
    et = predicted == BRATS_2018.et
    predicted[et & ~ndimage.binary_erosion(et)] = BRATS_2018.ncr
    return predicted


def score_box(predicted, reference) -> None:
    score_label_maps("c", "Full", predicted, BRATS_2018, reference, BRATS_2018, SPACING, (0,))


def score_whole(predicted, reference) -> None:
    score_regions("c", "Full", label_regions(predicted, BRATS_2018), label_regions(reference, BRATS_2018),
                  SPACING, (0,))


def score_monai(predicted, reference) -> None:
    p = torch.from_numpy(label_regions(predicted, BRATS_2018))[None].float()
    r = torch.from_numpy(label_regions(reference, BRATS_2018))[None].float()
    DiceMetric(include_background=True, reduction="none")(p, r)
    HausdorffDistanceMetric(include_background=True, percentile=95)(p, r, spacing=list(SPACING))


def median_seconds(function, repeats: int, *args) -> float:
    function(*args)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function(*args)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def scoring_table(case_dir: Path, repeats: int) -> None:
    reference, _ = read_image(next(case_dir.glob("*_seg.nii.gz")))
    predicted = prediction_like(reference)
    rows = {"mmrobust, tumour box": score_box, "mmrobust, whole volume": score_whole,
            "MONAI DiceMetric + HausdorffDistanceMetric(95)": score_monai}
    times = {name: median_seconds(function, repeats, predicted, reference) for name, function in rows.items()}
    baseline = times["MONAI DiceMetric + HausdorffDistanceMetric(95)"]
    print(f"Scoring one label-map pair ({' x '.join(map(str, reference.shape))}, WT/TC/ET Dice + HD95), "
          f"median of {repeats}\n")
    print("| scorer | seconds | ratio to MONAI |\n| --- | --- | --- |")
    for name, seconds in times.items():
        print(f"| {name} | {seconds:.3f} | {seconds / baseline:.2f} |")


def lesion_table(case_dir: Path, repeats: int) -> None:
    reference, _ = read_image(next(case_dir.glob("*_seg.nii.gz")))
    predicted = prediction_like(reference)

    def boxed():
        box = box_slices(bounding_box((predicted != 0) | (reference != 0), margin=4))
        return label_regions(predicted[box], BRATS_2018), label_regions(reference[box], BRATS_2018)

    def whole_volume_metrics():
        p, r = boxed()
        for region in range(3):
            dice(p[region], r[region]), hd95(p[region], r[region], SPACING)
            tp = int((p[region] & r[region]).sum())
            _ = (tp / max(int(r[region].sum()), 1), int(p[region].sum()) - tp)  # sensitivity, FP for specificity

    def lesion_wise(name):
        p, r = boxed()
        for region in range(3):
            lesion_scores(p[region], r[region], SPACING, LESION_CONVENTIONS[name])

    rows = {"whole-volume metrics (baseline)": (whole_volume_metrics,),
            **{f"lesion-wise, {name}": (lesion_wise, name) for name in LESION_CONVENTIONS},
            "everything `evaluate` scores per pair (score_label_maps, brats2023)": (score_box, predicted, reference)}
    times = {name: median_seconds(row[0], repeats, *row[1:]) for name, row in rows.items()}
    baseline = times["whole-volume metrics (baseline)"]
    print(f"\nLesion-wise scoring of that pair (WT/TC/ET on the tumour box), median of {repeats}\n")
    print("| scoring | seconds | ratio to whole-volume |\n| --- | --- | --- |")
    for name, seconds in times.items():
        print(f"| {name} | {seconds:.3f} | {seconds / baseline:.2f} |")


def prediction_table(case_dir: Path) -> None:
    predictor = Predictor.from_results([RUN])
    subsets = evaluation_subsets("all", predictor.modalities)
    case = find_input_cases(case_dir)[0]
    settings = PredictionSettings(step=0.5, sw_batch=2)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for protocol in ("shared", "per-subset"):
            subset_predictor = SubsetPredictor(predictor, settings, protocol)
            store = PredictionStore(Path(tmp) / protocol, subset_predictor.describe())
            start = time.perf_counter()
            subset_predictor.predict(case, subsets, store)
            results[protocol] = (time.perf_counter() - start,
                                 [read_image(store.path(s, case.case_id))[0] for s in subsets])
    shared_seconds, shared_labels = results["shared"]
    separate_seconds, separate_labels = results["per-subset"]
    agreement = np.mean([np.mean(a == b) for a, b in zip(shared_labels, separate_labels)])
    print(f"\nAll {len(subsets)} subsets of one case, demo 3D model (patch {predictor.plan.patch_size}), step 0.5, "
          f"no TTA\n")
    print("| protocol | seconds | seconds per subset | ratio |\n| --- | --- | --- | --- |")
    for name, seconds in (("per-subset (baseline)", separate_seconds), ("shared", shared_seconds)):
        print(f"| {name} | {seconds:.1f} | {seconds / len(subsets):.2f} | {seconds / separate_seconds:.2f} |")
    print(f"\nvoxels with the same label in both protocols: {100 * agreement:.4f} %")


def commands_table(repeats: int, threads: int) -> None:
    raw = DEMO / "raw" / "BraTS2018"
    cases, description = dataset_cases(raw, DEMO / "preprocessed" / "BraTS2018" / "splits.json", 0, "val")
    mmrobust = str(Path(sys.executable).with_name("mmrobust"))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    times: dict[str, list[float]] = {"predict": [], "evaluate": []}
    with tempfile.TemporaryDirectory() as tmp:
        inputs = Path(tmp) / "inputs"
        inputs.mkdir()
        for case in cases:
            (inputs / case.case_id).symlink_to(case.folder.resolve())
        for repeat in range(repeats):
            commands = {"predict": [mmrobust, "predict", "-i", str(inputs), "-o", f"{tmp}/predict_{repeat}",
                                    "-m", str(RUN_2D)],
                        "evaluate": [mmrobust, "evaluate", "-m", str(RUN_2D), "-o", f"{tmp}/evaluate_{repeat}",
                                     "--raw", str(DEMO / "raw"), "--preprocessed", str(DEMO / "preprocessed")]}
            for name, command in commands.items():
                start = time.perf_counter()
                subprocess.run(command, env=env, check=True, capture_output=True)
                times[name].append(time.perf_counter() - start)
    predict, evaluate = statistics.median(times["predict"]), statistics.median(times["evaluate"])
    print(f"\n`mmrobust predict` (all four sequences) against `mmrobust evaluate` (15 subsets, shared, scored), "
          f"demo 2D model, {len(cases)} {description}, each command in its own process, alternately, median of "
          f"{repeats}\n")
    print("| command | seconds | ratio to predict |\n| --- | --- | --- |")
    print(f"| mmrobust predict | {predict:.1f} | 1.00 |\n| mmrobust evaluate | {evaluate:.1f} | "
          f"{evaluate / predict:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-prediction", action="store_true", help="Only the scoring table.")
    parser.add_argument("--only-commands", action="store_true", help="Only the evaluate-against-predict table.")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for run in (RUN, RUN_2D):
        if not args.skip_prediction and not (run / "checkpoint_best.pt").is_file():
            raise SystemExit(f"{run}: no trained model; run `make demo` first (or pass --skip-prediction)")
    print(f"torch {torch.__version__}, CPU, {args.threads} threads\n")
    if args.only_commands:
        commands_table(args.repeats, args.threads)
        return
    with tempfile.TemporaryDirectory() as tmp:
        raw = make_synthetic_dataset(Path(tmp) / "raw", SyntheticSpec("brats2021", 1, (155, 240, 240), seed=7),
                                     progress=False)
        case_dir = next(p for p in raw.iterdir() if p.is_dir())
        scoring_table(case_dir, args.repeats)
        lesion_table(case_dir, args.repeats)
        if not args.skip_prediction:
            prediction_table(case_dir)
    if not args.skip_prediction:
        commands_table(args.repeats, args.threads)


if __name__ == "__main__":
    main()
