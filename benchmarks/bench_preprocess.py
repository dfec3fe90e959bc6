"""Preprocessing speed and peak memory on BraTS-sized synthetic cases, -np 1 vs -np 2.

Run: .venv/bin/python benchmarks/bench_preprocess.py [--cases 6] [--shape 155,240,240]

Prints seconds per case and the peak resident memory of the whole process tree of
`mmrobust preprocess --overwrite`, and the ratio of its time to a baseline measured in the same
run: reading every NIfTI file of the cases once (the I/O floor any preprocessing pays).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from process_tree import run_measured

from mmseg_robust.data import discover_dataset
from mmseg_robust.data.nifti_io import read_image
from mmseg_robust.data.synthetic.writer import SyntheticSpec, make_synthetic_dataset

MIB = 1024**2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=6)
    parser.add_argument("--shape", default="155,240,240", help="D,H,W")
    args = parser.parse_args()
    shape = tuple(int(s) for s in args.shape.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        raw = make_synthetic_dataset(root / "raw" / "Bench", SyntheticSpec("brats2021", args.cases, shape, seed=0),
                                     num_processes=2, progress=False)
        env = {**os.environ, "MMROBUST_RAW": str(root / "raw"), "MMROBUST_PREPROCESSED": str(root / "pre")}
        cli = [sys.executable, "-m", "mmseg_robust", "-q"]
        run_measured(cli + ["extract_fingerprint", "-d", "Bench", "-np", "2"], env)
        run_measured(cli + ["plan", "-d", "Bench"], env)
        files = [f for case in discover_dataset(raw).cases for f in case.files]
        start = time.perf_counter()
        for file in files:
            read_image(file)
        floor = (time.perf_counter() - start) / args.cases
        rows = []
        for processes in (1, 2):
            seconds, peak = run_measured(cli + ["preprocess", "-d", "Bench", "-c", "3d_fullres", "-np", str(processes),
                                                "--overwrite"], env)
            rows.append((processes, seconds / args.cases, peak))
    print(f"{args.cases} synthetic cases of {args.shape} (D,H,W), 4 modalities, float32 storage")
    print(f"{'run':<28}{'s/case':>8}{'peak RSS MiB':>14}{'vs read floor':>15}")
    for processes, per_case, peak in rows:
        print(f"{'preprocess -np ' + str(processes):<28}{per_case:>8.2f}{peak / MIB:>14.0f}{per_case / floor:>14.2f}x")
    print(f"{'floor: read the NIfTI files':<28}{floor:>8.2f}")
    print(f"speed-up of -np 2 over -np 1: {rows[0][1] / rows[1][1]:.2f}x")


if __name__ == "__main__":
    main()
