"""Speed of `make-synthetic` and `verify`, each against the floor cost of its file I/O.

Run: .venv/bin/python benchmarks/bench_raw_data.py [--cases 20] [--shape 96,96,96]

Prints a table: seconds per case for generation (-np 1 and 2) and verification (-np 1 and 2),
and the ratio to a baseline measured in the same run: for generation, writing the same NIfTI
files with SimpleITK; for verification, reading every file once with SimpleITK.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import SimpleITK as sitk

from mmseg_robust.data import discover_dataset, verify_dataset
from mmseg_robust.data.synthetic.writer import SyntheticSpec, make_synthetic_dataset


def _timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=20)
    parser.add_argument("--shape", default="96,96,96", help="D,H,W")
    args = parser.parse_args()
    shape = tuple(int(s) for s in args.shape.split(","))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for processes in (1, 2):
            spec = SyntheticSpec("brats2021", args.cases, shape, seed=processes)
            seconds = _timed(lambda: make_synthetic_dataset(root / f"np{processes}", spec,
                                                            num_processes=processes, progress=False))
            rows.append((f"make-synthetic -np {processes}", seconds))
        dataset = discover_dataset(root / "np1")
        files = [f for case in dataset.cases for f in case.files]
        images = [sitk.ReadImage(str(f)) for f in files]
        write_floor = _timed(lambda: [sitk.WriteImage(image, str(root / f"copy_{i}.nii.gz"))
                                      for i, image in enumerate(images)])
        read_floor = _timed(lambda: [sitk.ReadImage(str(f)) for f in files])
        for processes in (1, 2):
            seconds = _timed(lambda: verify_dataset(dataset, num_processes=processes, progress=False))
            rows.append((f"verify -np {processes}", seconds))
    print(f"{args.cases} cases of {args.shape} (D,H,W), brats2021 layout")
    print(f"{'step':<24}{'s total':>10}{'s/case':>10}{'vs I/O floor':>14}")
    for name, seconds in rows:
        floor = write_floor if name.startswith("make") else read_floor
        print(f"{name:<24}{seconds:>10.2f}{seconds / args.cases:>10.3f}{seconds / floor:>13.2f}x")
    print(f"{'floor: write files':<24}{write_floor:>10.2f}{write_floor / args.cases:>10.3f}")
    print(f"{'floor: read files':<24}{read_floor:>10.2f}{read_floor / args.cases:>10.3f}")


if __name__ == "__main__":
    main()
