"""Cross-check of mmrobust's lesion-wise metrics against an independent implementation of the
official rules (benchmarks/lesion_reference.py) and, when given its interpreter, panoptica itself.

    .venv/bin/python benchmarks/lesion_crosscheck.py [--random 20] [--pair PRED REF ...]
        [--panoptica-python PY --panoptica-config config_gli.yaml]

Cases: ``--random N`` generated label-map pairs (BraTS 2023 labels 1 NETC, 2 SNFH, 3 ET; several
tumours, anisotropic spacing for every third) and ``--pair`` NIfTI pairs made by others, for
instance the sample cases of BraTS/BraTS_evaluation (``example/sample_data``). For every case and
region (WT, TC, ET) it compares Dice, HD95 and the TP/FP/FN counts of ``brats2023`` with the
reference's 2023 rules, and of ``brats2024`` with the reference's panoptica rules and, with
``--panoptica-python``, with panoptica run on the BraTS package's glioma config. panoptica pins
NumPy below 2.3, so it runs in its own environment (e.g. ``python3 -m venv /tmp/panoptica &&
/tmp/panoptica/bin/pip install panoptica nibabel``), fed the masks as .npy files.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lesion_reference  # noqa: E402

from mmseg_robust.data.labels import BRATS_2023  # noqa: E402
from mmseg_robust.data.nifti_io import read_image  # noqa: E402
from mmseg_robust.evaluation.lesions import LESION_CONVENTIONS, lesion_scores  # noqa: E402
from mmseg_robust.evaluation.scoring import label_regions  # noqa: E402

REGIONS = ("WT", "TC", "ET")
# Run in panoptica's interpreter: one label-map pair per line of the job, its groups' results out.
PANOPTICA_PROGRAM = r"""
import json, sys, numpy as np
from panoptica import Panoptica_Evaluator
job = json.load(open(sys.argv[1]))
evaluator = Panoptica_Evaluator.load_from_config(job["config"])
out = []
for case in job["cases"]:
    results = evaluator.evaluate(np.load(case["pred"]), np.load(case["ref"]), voxelspacing=tuple(case["spacing"]),
                                 verbose=False, log_times=False)
    out.append({group: {key: float(getattr(result, key)) for key in ("sq_dsc", "sq_hd95", "tp", "fp", "fn")}
                for group, result in results.items() if group in ("wt", "tc", "et")})
json.dump(out, open(sys.argv[2], "w"))
"""


def random_pair(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    shape = (48, 56, 56)
    grid = np.ogrid[tuple(slice(0, n) for n in shape)]
    reference = np.zeros(shape, np.uint8)
    for _ in range(int(rng.integers(0, 4))):
        centre, radius = rng.integers(8, np.array(shape) - 8), rng.uniform(3, 8)
        distance = np.sqrt(sum(((x - c) / (radius * rng.uniform(0.7, 1.3))) ** 2 for x, c in zip(grid, centre)))
        reference[distance <= 1] = 2
        reference[distance <= 0.6] = 1
        reference[(distance <= 0.45) & (distance > 0.2)] = 3
    prediction = np.roll(reference, tuple(rng.integers(-2, 3, 3)), axis=(0, 1, 2))
    noise = rng.random(shape) < 0.002
    prediction[noise] = rng.integers(1, 4, int(noise.sum()))
    return prediction, reference


def load_cases(args) -> list[tuple[str, np.ndarray, np.ndarray, tuple[float, ...]]]:
    cases = []
    rng = np.random.default_rng(args.seed)
    for index in range(args.random):
        prediction, reference = random_pair(rng)
        cases.append((f"random{index}", prediction, reference, (1.0, 1.0, 1.0) if index % 3 else (1.0, 1.2, 2.0)))
    for prediction_path, reference_path in args.pair or []:
        prediction, _ = read_image(prediction_path)
        reference, geometry = read_image(reference_path)
        cases.append((Path(reference_path).name, prediction, reference, geometry.array_spacing))
    return cases


def run_panoptica(python: str, config: str, cases) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        job = {"config": str(Path(config).resolve()), "cases": []}
        for index, (_, prediction, reference, spacing) in enumerate(cases):
            np.save(f"{tmp}/p{index}.npy", prediction)
            np.save(f"{tmp}/r{index}.npy", reference)
            job["cases"].append({"pred": f"{tmp}/p{index}.npy", "ref": f"{tmp}/r{index}.npy",
                                 "spacing": list(spacing)})
        Path(tmp, "job.json").write_text(json.dumps(job))
        Path(tmp, "run.py").write_text(PANOPTICA_PROGRAM)
        subprocess.run([python, f"{tmp}/run.py", f"{tmp}/job.json", f"{tmp}/out.json"], check=True)
        return json.loads(Path(tmp, "out.json").read_text())


def panoptica_as_brats(values: dict) -> tuple[float, float, int, int, int]:
    """panoptica's result as the BraTS package reports it: an infinite HD95 is 373."""
    hd95 = values["sq_hd95"]
    return (values["sq_dsc"], 373.0 if math.isinf(hd95) else hd95, int(values["tp"]), int(values["fp"]),
            int(values["fn"]))


def compare(rows: list[tuple[tuple, tuple]]) -> str:
    count_mismatches = sum(a[2:] != b[2:] for a, b in rows)
    nan_mismatches = sum(math.isnan(a[0]) != math.isnan(b[0]) for a, b in rows)
    both = [(a, b) for a, b in rows if not (math.isnan(a[0]) or math.isnan(b[0]))]
    dice = max((abs(a[0] - b[0]) for a, b in both), default=0.0)
    hd95 = max((abs(a[1] - b[1]) for a, b in both), default=0.0)
    return f"{len(rows)} | {count_mismatches} | {nan_mismatches} | {dice:.2e} | {hd95:.2e}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--random", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pair", nargs=2, action="append", metavar=("PRED", "REF"))
    parser.add_argument("--panoptica-python")
    parser.add_argument("--panoptica-config")
    args = parser.parse_args()
    cases = load_cases(args)
    ours = {name: [] for name in LESION_CONVENTIONS}
    reference_rows = {"brats2023": [], "brats2024": []}
    for _, prediction, reference, spacing in cases:
        predicted_regions = label_regions(prediction, BRATS_2023)
        reference_regions = label_regions(reference, BRATS_2023)
        for index in range(len(REGIONS)):
            p, r = predicted_regions[index], reference_regions[index]
            for name, convention in LESION_CONVENTIONS.items():
                s = lesion_scores(p, r, spacing, convention)
                ours[name].append((s.dice, s.hd95, s.tp, s.fp, s.fn))
            reference_rows["brats2023"].append(lesion_reference.brats2023(p, r, spacing))
            reference_rows["brats2024"].append(lesion_reference.brats2024(p, r, spacing))
    print(f"{len(cases)} case(s) x {len(REGIONS)} regions\n")
    print("| mmrobust against | comparisons | count mismatches | NaN mismatches | max abs Dice diff "
          "| max abs HD95 diff |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name in ("brats2023", "brats2024"):
        print(f"| reference, {name} rules | {compare(list(zip(ours[name], reference_rows[name])))} |")
    if args.panoptica_python:
        results = run_panoptica(args.panoptica_python, args.panoptica_config, cases)
        panoptica_rows = [panoptica_as_brats(case[region.lower()]) for case in results for region in REGIONS]
        print(f"| panoptica, BraTS glioma config | {compare(list(zip(ours['brats2024'], panoptica_rows)))} |")


if __name__ == "__main__":
    main()
