"""`mmrobust predict` against MONAI's `sliding_window_inference` driving the same network.

Run after `make demo` (it uses the demo's trained 3D and 2D models and plans):
    .venv/bin/python benchmarks/bench_inference.py [--threads 2] [--repeats 2] [--only-engine]

One synthetic BraTS-sized case (155 x 240 x 240, all four sequences) is generated in a temporary
folder. Each row runs in its own process and reports wall time (median of ``--repeats``, after one
warm-up) and the process's peak RSS, for the whole job: read the NIfTI files, normalise, sliding
window (patch of the plan, overlap 0.5, Gaussian weighting with sigma = patch/8, 2 windows per
forward, no TTA), threshold, write the label map.

* ``mmrobust``: ``Predictor.predict_case`` (crops to the brain first, as training did);
* ``MONAI``: the same network inside ``monai.inferers.sliding_window_inference`` on the whole
  z-scored volume (how a MONAI user runs a model), then the same thresholding and writing.

Most of that job's difference is the brain crop, so a second table compares the engines on equal
terms: the sliding window alone, on the same cropped, normalised volume (all four sequences), with
the same callable (``Predictor.window_predictor``: the DS branches of the modalities), patch,
overlap, Gaussian weighting (sigma = patch/8) and windows per forward. Rows: mmrobust's
``sliding_window_predict`` and MONAI's ``sliding_window_inference`` for the 3D and the 2D model (a
2D patch ``(1, y, x)`` for MONAI on the volume; mmrobust batches the windows of all slices), and
mmrobust slice by slice (its 2D path before the windows were batched across slices). Peak MB is the
process's peak RSS above its RSS just before the engine ran (the volume and the model loaded);
max |diff| is the largest logit difference to mmrobust's output (MONAI spreads its windows from
the start of each axis, mmrobust evenly).
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
from mmseg_robust.inference.sliding_window import SIGMA_SCALE, sliding_window_predict
from mmseg_robust.preprocessing.normalization import zscore_in_mask
from mmseg_robust.preprocessing.preprocessor import prepare_images, read_case_images

from mmseg_robust.data.labels import REGIONS
from mmseg_robust.data.nifti_io import read_image, write_image_atomic
from mmseg_robust.data.synthetic.writer import SyntheticSpec, make_synthetic_dataset

RESULTS = Path("demo_data/results/BraTS2018")
RUN = RESULTS / "3d_fullres__plain__weightedfusion" / "fold_0"
ENGINE_RUNS = {"3D": RUN, "2D": RESULTS / "2d__plain__weightedfusion" / "fold_0"}
ENGINES = {"3D": ("mmrobust", "MONAI"), "2D": ("mmrobust", "MONAI", "mmrobust, slice by slice")}
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


def current_rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize() / 2**20


def engine_logits(engine: str, predict, channels: torch.Tensor, patch: tuple[int, ...]) -> torch.Tensor:
    """Logits ``(R, *volume)`` of ``channels`` ``(M, *volume)`` by one sliding-window engine."""
    from monai.inferers import sliding_window_inference

    if engine == "mmrobust":
        return sliding_window_predict(predict, channels, patch, STEP, SW_BATCH)
    if engine == "mmrobust, slice by slice":
        return torch.stack([sliding_window_predict(predict, channels[:, z], patch, STEP, SW_BATCH)
                            for z in range(channels.shape[1])], dim=1)
    if len(patch) == channels.dim() - 1:
        return sliding_window_inference(channels[None], patch, SW_BATCH, predict, overlap=1 - STEP,
                                        mode="gaussian", sigma_scale=SIGMA_SCALE)[0]
    # A 2D network on a volume: windows one slice thick, the slice axis folded away for the network.
    return sliding_window_inference(channels[None], (1,) + patch, SW_BATCH,
                                    lambda windows: predict(windows[:, :, 0])[:, :, None],
                                    overlap=(0.0,) + (1 - STEP,) * len(patch), mode="gaussian",
                                    sigma_scale=SIGMA_SCALE)[0]


def measure_engine(model: str, engine: str, channels_file: Path, repeats: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    predictor = Predictor.from_results([ENGINE_RUNS[model]])
    channels = torch.from_numpy(np.load(channels_file))
    predict = predictor.window_predictor(predictor.models[0], predictor.modalities, tta=False)
    patch = tuple(predictor.plan.patch_size)
    before = current_rss_mb()
    times = []
    for index in range(repeats + 1):
        start = time.perf_counter()
        logits = engine_logits(engine, predict, channels, patch)
        if index:  # the first run warms up caches and lazy imports
            times.append(time.perf_counter() - start)
        np.save(channels_file.with_name(f"{model}_{engine}.npy".replace(" ", "_").replace(",", "")), logits.numpy())
        del logits
    return {"seconds": statistics.median(times),
            "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before}


def engine_table(case_dir: Path, tmp: Path, repeats: int, threads: int) -> None:
    print("\nThe sliding window alone, same callable, same cropped volume (all four sequences)\n")
    print("| model | engine | seconds | ratio to mmrobust | peak MB above the inputs | max abs diff to mmrobust |")
    print("| --- | --- | --- | --- | --- | --- |")
    for model, run in ENGINE_RUNS.items():
        predictor = Predictor.from_results([run])
        case = find_input_cases(case_dir)[0]
        raw, geometry = read_case_images(case.case_id, case.images, case.modalities)
        channels, _ = predictor.input_channels(prepare_images(raw, case.modalities, geometry, predictor.plans))
        channels_file = tmp / f"{model}_channels.npy"
        np.save(channels_file, channels.numpy())
        results = {}
        for engine in ENGINES[model]:
            command = [sys.executable, __file__, "--engine-row", model, engine, str(channels_file), "--repeats",
                       str(repeats), "--threads", str(threads)]
            results[engine] = json.loads(subprocess.run(command, capture_output=True, text=True,
                                                        check=True).stdout)
        outputs = {e: np.load(tmp / f"{model}_{e}.npy".replace(" ", "_").replace(",", "")) for e in ENGINES[model]}
        ours = results["mmrobust"]
        for engine, row in results.items():
            difference = float(np.abs(outputs[engine] - outputs["mmrobust"]).max())
            print(f"| {model}, patch {'x'.join(map(str, predictor.plan.patch_size))}, volume "
                  f"{'x'.join(map(str, channels.shape[1:]))} | {engine} | {row['seconds']:.1f} | "
                  f"{row['seconds'] / ours['seconds']:.2f} | {row['peak_mb']:.0f} | {difference:.2g} |", flush=True)


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
    parser.add_argument("--only-engine", action="store_true", help="Only the sliding-window table.")
    parser.add_argument("--shape", type=lambda v: tuple(int(n) for n in v.split(",")), default=(155, 240, 240),
                        help="Size z,y,x of the synthetic case (default: BraTS's).")
    parser.add_argument("--row", nargs=3, help=argparse.SUPPRESS)  # internal: tool, subset, case folder
    parser.add_argument("--engine-row", nargs=3, help=argparse.SUPPRESS)  # internal: model, engine, channels
    args = parser.parse_args()
    for run in ENGINE_RUNS.values():
        if not (run / "checkpoint_best.pt").is_file():
            raise SystemExit(f"{run}: no trained model; run `make demo` first")
    if args.engine_row:
        model, engine, channels_file = args.engine_row
        print(json.dumps(measure_engine(model, engine, Path(channels_file), args.repeats, args.threads)))
        return
    if args.row:
        tool, subset, case_dir = args.row
        print(json.dumps(measure(tool, subset, Path(case_dir), args.repeats, args.threads)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        raw = make_synthetic_dataset(Path(tmp) / "raw", SyntheticSpec("brats2021", 1, args.shape, seed=7),
                                     progress=False)
        case_dir = next(p for p in raw.iterdir() if p.is_dir())
        plan = Predictor.from_results([RUN]).plan
        print(f"torch {torch.__version__}, CPU, {args.threads} threads; one {'x'.join(map(str, args.shape))} case; "
              f"patch {plan.patch_size}, "
              f"features {plan.features_per_stage}; step {STEP}, {SW_BATCH} windows per forward, no TTA; median of "
              f"{args.repeats} after a warm-up; regions {', '.join(REGIONS)}\n")
        if args.only_engine:
            engine_table(case_dir, Path(tmp), args.repeats, args.threads)
            return
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
        engine_table(case_dir, Path(tmp), args.repeats, args.threads)


if __name__ == "__main__":
    main()
