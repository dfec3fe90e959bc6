"""`mmrobust predict` against MONAI's `sliding_window_inference` driving the same network.

Run after `make demo` (it uses the demo's trained 3D model and plans):
    .venv/bin/python benchmarks/bench_inference.py [--threads 2] [--repeats 2]

One synthetic BraTS-sized case (155 x 240 x 240, all four sequences) is generated in a temporary
folder. Each row runs in its own process and reports wall time (median of ``--repeats``, after one
warm-up) and the process's peak RSS, for the whole job: read the NIfTI files, normalise, sliding
window (patch of the plan, overlap 0.5, Gaussian weighting with sigma = patch/8, 2 windows per
forward, no TTA), threshold, write the label map.

* ``mmrobust``: ``Predictor.predict_case`` (crops to the brain first, as training did);
* ``MONAI``: the same network inside ``monai.inferers.sliding_window_inference`` on the whole
  z-scored volume (how a MONAI user runs a model), then the same thresholding and writing.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from mmseg_robust.inference.export import REGION_THRESHOLD, regions_to_label
from mmseg_robust.inference.inputs import find_input_cases
from mmseg_robust.inference.predictor import PredictionSettings, Predictor
from mmseg_robust.inference.sliding_window import SIGMA_SCALE
from mmseg_robust.preprocessing.normalization import zscore_in_mask

from mmseg_robust.data.labels import REGIONS
from mmseg_robust.data.nifti_io import read_image, write_image_atomic
from mmseg_robust.data.synthetic.writer import SyntheticSpec, make_synthetic_dataset

RUN = Path("demo_data/results/BraTS2018/3d_fullres__gmd+cggm/fold_0")
SUBSETS = {"all four": ("flair", "t1", "t1ce", "t2"), "t1 + flair": ("flair", "t1")}
STEP = 0.5
SW_BATCH = 2


def run_mmrobust(case_dir: Path, modalities: tuple[str, ...], out: Path) -> None:
    predictor = Predictor.from_results([RUN])
    case = find_input_cases(case_dir)[0]
    predictor.predict_case(case, modalities, out, PredictionSettings(step=STEP, sw_batch=SW_BATCH))


def run_monai(case_dir: Path, modalities: tuple[str, ...], out: Path) -> None:
    from monai.inferers import sliding_window_inference

    predictor = Predictor.from_results([RUN])
    network, patch = predictor.models[0].network, predictor.plan.patch_size
    case = find_input_cases(case_dir)[0]
    arrays, geometry = [], None
    for modality in predictor.modalities:
        if modality in modalities:
            array, geometry = read_image(case.images[modality])
            arrays.append(array)
    brain = np.logical_or.reduce([a != 0 for a in arrays])
    volume = torch.zeros((1, len(predictor.modalities)) + brain.shape)
    for array, modality in zip(arrays, [m for m in predictor.modalities if m in modalities]):
        volume[0, predictor.modalities.index(modality)] = torch.from_numpy(zscore_in_mask(array, brain)[0])
    available = torch.tensor([[m in modalities for m in predictor.modalities]])
    with torch.no_grad():
        logits = sliding_window_inference(volume, patch, SW_BATCH, lambda x: network(x, available.expand(len(x), -1)),
                                          overlap=1 - STEP, mode="gaussian", sigma_scale=SIGMA_SCALE)
    regions = torch.sigmoid(logits[0]).numpy() > REGION_THRESHOLD
    label = regions_to_label(regions, predictor.plans.label_convention)
    write_image_atomic(label.astype(np.uint8), geometry, out / f"{case.case_id}.nii.gz")


def measure(tool: str, subset: str, case_dir: Path, repeats: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    runner = run_mmrobust if tool == "mmrobust" else run_monai
    times = []
    for index in range(repeats + 1):
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            runner(case_dir, SUBSETS[subset], Path(out))
            if index:  # the first run warms up caches and lazy imports
                times.append(time.perf_counter() - start)
    return {"seconds": statistics.median(times),
            "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--row", nargs=3, help=argparse.SUPPRESS)  # internal: tool, subset, case folder
    args = parser.parse_args()
    if not (RUN / "checkpoint_best.pt").is_file():
        raise SystemExit(f"{RUN}: no trained model; run `make demo` first")
    if args.row:
        tool, subset, case_dir = args.row
        print(json.dumps(measure(tool, subset, Path(case_dir), args.repeats, args.threads)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        raw = make_synthetic_dataset(Path(tmp) / "raw", SyntheticSpec("brats2021", 1, (155, 240, 240), seed=7),
                                     progress=False)
        case_dir = next(p for p in raw.iterdir() if p.is_dir())
        plan = Predictor.from_results([RUN]).plan
        print(f"torch {torch.__version__}, CPU, {args.threads} threads; one 155x240x240 case; patch {plan.patch_size}, "
              f"features {plan.features_per_stage}; step {STEP}, {SW_BATCH} windows per forward, no TTA; median of "
              f"{args.repeats} after a warm-up; regions {', '.join(REGIONS)}\n")
        print("| modalities | mmrobust s | MONAI s | time ratio | mmrobust peak MB | MONAI peak MB | memory ratio |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for subset in SUBSETS:
            results = {}
            for tool in ("mmrobust", "monai"):
                command = [sys.executable, __file__, "--row", tool, subset, str(case_dir), "--repeats",
                           str(args.repeats), "--threads", str(args.threads)]
                results[tool] = json.loads(subprocess.run(command, capture_output=True, text=True,
                                                          check=True).stdout)
            ours, theirs = results["mmrobust"], results["monai"]
            print(f"| {subset} | {ours['seconds']:.1f} | {theirs['seconds']:.1f} | "
                  f"{ours['seconds'] / theirs['seconds']:.2f} | {ours['peak_mb']:.0f} | {theirs['peak_mb']:.0f} | "
                  f"{ours['peak_mb'] / theirs['peak_mb']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
