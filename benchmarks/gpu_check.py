"""One prepared command that measures, in a few minutes on one GPU, what mmrobust promises on CUDA.

Run (a lent GPU; benchmarks/gpu_check.sh installs the carried wheels first):
    python benchmarks/gpu_check.py --device cuda --minutes 8 -o gpu_check_out
On the CPU, every part at toy sizes in about a minute (the suite runs it):
    .venv/bin/python benchmarks/gpu_check.py --device cpu --tiny -o /tmp/gpu_check

Parts, in order, each stopped at its share of ``--minutes`` (``gpu_check_parts/workspace.py``
TIME_SHARES), each recorded as measured, skipped (with the reason), stopped at its time share or
failed; ``gpu_check.json`` and ``gpu_check.md`` are rewritten after every part:

1. environment: torch, CUDA, cuDNN, the device, its memory, bf16;
2. 3D training at the planner's own 24 GB plan on synthetic 128³ cases made in the run: it/s and
   peak memory for fp32, bf16 and fp16 (GradScaler) x plain, gmd k=5, cggm (and gmd over all 15
   subsets if time allows), the planner's estimate beside the peak, fp16 + GMD's loss scale;
3. ``torch.compile`` on and off for plain: it/s and the compile time;
4. ``mmrobust predict`` of a BraTS-size case with and without mirroring; ``mmrobust evaluate``
   under all 15 subsets beside one full-modality predict;
5. ``torchrun --nproc_per_node 1`` (nccl): two training steps and a checkpoint;
6. the robustness study's ``full`` budget: its first run for a few iterations.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import time
from pathlib import Path

import torch
from gpu_check_parts.process_parts import distributed_part, inference_part, study_part
from gpu_check_parts.report import FAILED, CheckReport, PartResult
from gpu_check_parts.training_parts import TrainingSetup, compile_part, environment_part, training_part
from gpu_check_parts.workspace import GPU_SIZES, TIME_SHARES, TINY_SIZES, CheckStepError, Deadline, Workspace

from mmseg_robust.devices import resolve_device
from mmseg_robust.errors import MMRobustError

logger = logging.getLogger("gpu_check")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N [default: auto]")
    parser.add_argument("--minutes", type=float, default=8.0, help="time for all parts together [default: 8]")
    parser.add_argument("--tiny", action="store_true", help="toy sizes: every part in about a minute on a CPU")
    parser.add_argument("-o", "--output", type=Path, default=Path("gpu_check_out"), help="output folder")
    parser.add_argument("--work", type=Path, default=None,
                        help="folder for the check's data, runs and logs [default: OUTPUT/work]; elsewhere "
                             "when only the two report files should land in OUTPUT")
    return parser.parse_args(argv)


def _run_part(report: CheckReport, output: Path, name: str, title: str, work) -> PartResult | None:
    """Run one part, record it (a failure of its own is recorded, never raised) and write the files."""
    started = time.perf_counter()
    try:
        part = work()
    except (CheckStepError, subprocess.SubprocessError, RuntimeError, ValueError, OSError) as error:
        part = PartResult(name, title, status=FAILED, reason=f"{type(error).__name__}: {error}")
    part.seconds = time.perf_counter() - started
    report.parts.append(part)
    report.write(output)
    logger.info("%s: %s%s (%.1f s)", title, part.status, f" ({part.reason})" if part.reason else "", part.seconds)
    return part


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    try:
        device = resolve_device(args.device)
    except MMRobustError as error:
        print(f"gpu_check: {error}", file=sys.stderr)
        return 2
    sizes = TINY_SIZES if args.tiny else GPU_SIZES
    output = args.output.resolve()
    output.mkdir(parents=True, exist_ok=True)
    report = CheckReport(str(device), sizes.name, args.minutes)
    total = args.minutes * 60

    def share(name: str) -> Deadline:
        return Deadline(TIME_SHARES[name] * total)

    workspace = Workspace(output, str(device), sizes, args.work)
    _run_part(report, output, "environment", "1. Environment", lambda: environment_part(device))
    started = time.perf_counter()
    try:
        workspace.prepare_data()
        setup = TrainingSetup.load(workspace, device)
    except CheckStepError as error:
        report.parts.append(PartResult("data", "Data", status=FAILED, reason=str(error)))
        report.write(output)
        print(report.markdown())
        return 1
    logger.info("data ready in %.1f s", time.perf_counter() - started)
    _run_part(report, output, "training", "2. 3D training",
              lambda: training_part(workspace, setup, device, share("training")))
    _run_part(report, output, "compile", "3. torch.compile",
              lambda: compile_part(setup, device, sizes, share("compile")))
    setup.batches.clear()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    _run_part(report, output, "inference", "4. Inference", lambda: inference_part(workspace, share("inference")))
    _run_part(report, output, "distributed", "5. torchrun", lambda: distributed_part(workspace, share("distributed")))
    _run_part(report, output, "study", "6. Robustness study", lambda: study_part(workspace, share("study")))
    print(report.markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
