"""The check's sizes, its time shares, and its own data: synthetic BraTS-layout cases planned and
preprocessed through the ``mmrobust`` command line, as a user would, in the output folder."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

DATASET = "GPUCheck"
#: Lines of a failed command's output that an error quotes.
OUTPUT_TAIL = 15


class CheckStepError(RuntimeError):
    """A command of the check failed; the message quotes the end of its output."""


@dataclass(frozen=True)
class CheckSizes:
    """How big each part runs. ``gpu``: what the issue asks a GPU to measure (the planner's own
    24 GB plan on 128³ cases, a BraTS-size case for inference); ``tiny``: toy sizes that run every
    part on a CPU in about a minute (the suite runs them, so the script cannot rot)."""

    name: str
    shape: tuple[int, int, int]
    n_cases: int
    plan_args: tuple[str, ...]
    warmup_steps: int
    timed_steps: int
    checkpoint_iterations: int
    #: The BraTS-size case predict runs on; None: one of the check's own cases.
    predict_shape: tuple[int, int, int] | None
    compile_backend: str
    study_iterations: int

    @property
    def tiny(self) -> bool:
        return self.name == "tiny"


GPU_SIZES = CheckSizes("gpu", (128, 128, 128), 5, (), warmup_steps=2, timed_steps=6, checkpoint_iterations=5,
                       predict_shape=(155, 240, 240), compile_backend="inductor", study_iterations=2)
#: ``eager`` compiles through dynamo without generating code: inductor's C++ build alone takes
#: minutes on a CPU.
TINY_SIZES = CheckSizes("tiny", (32, 32, 32), 5, ("--patch-size", "16,16,16", "--batch-size", "2",
                                                 "--base-features", "4"),
                        warmup_steps=1, timed_steps=2, checkpoint_iterations=2, predict_shape=(32, 40, 40),
                        compile_backend="eager", study_iterations=1)

#: Each part's share of ``--minutes`` (the data preparation takes what it needs first).
TIME_SHARES: dict[str, float] = {"environment": 0.02, "training": 0.36, "compile": 0.12, "inference": 0.22,
                                 "distributed": 0.10, "study": 0.18}


def first_match(paths: Iterable[Path], what: str) -> Path:
    """The first of ``paths``.

    Raises:
        CheckStepError: there is none (a step did not write what the next one reads).
    """
    for path in paths:
        return path
    raise CheckStepError(f"no {what}")


class Deadline:
    """A part's end: ``seconds`` from now."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return max(0.0, self.end - time.monotonic())

    def passed(self) -> bool:
        return self.left() <= 0


class Workspace:
    """The check's folders and the ``mmrobust`` commands run in them (each its own process, with
    the data folders in its environment)."""

    def __init__(self, output: Path, device: str, sizes: CheckSizes, work: Path | None = None) -> None:
        self.output = Path(output).resolve()
        self.root = Path(work).resolve() if work is not None else self.output / "work"
        self.device = device
        self.sizes = sizes
        self.env = {**os.environ, "MMROBUST_RAW": str(self.root / "raw"),
                    "MMROBUST_PREPROCESSED": str(self.root / "preprocessed"),
                    "MMROBUST_RESULTS": str(self.root / "results"), "PYTHONUNBUFFERED": "1"}

    def mmrobust(self, *args: str, timeout: float | None = None, log: str | None = None) -> float:
        """Run ``mmrobust ARGS``; its seconds. Output goes to ``work/logs/<log>.log``.

        Raises:
            CheckStepError: a non-zero exit (quoting the log's end).
            subprocess.TimeoutExpired: it outlived ``timeout``.
        """
        return self.command([sys.executable, "-m", "mmseg_robust", *args], timeout, log or args[0])

    def command(self, argv: list[str], timeout: float | None, log: str) -> float:
        logs = self.root / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        path = logs / f"{log}.log"
        started = time.perf_counter()
        with path.open("w") as handle:
            # Not from the repository's root: its source ``mmseg_robust`` would shadow the installed one.
            result = subprocess.run(argv, env=self.env, stdout=handle, stderr=subprocess.STDOUT, timeout=timeout,
                                    cwd=self.root)
        if result.returncode != 0:
            tail = path.read_text(errors="replace").splitlines()[-OUTPUT_TAIL:]
            raise CheckStepError(f"{' '.join(argv[2:5])} ... failed (exit {result.returncode}): " + " / ".join(tail))
        return time.perf_counter() - started

    @property
    def preprocessed(self) -> Path:
        return self.root / "preprocessed" / DATASET

    @property
    def results(self) -> Path:
        return self.root / "results"

    def prepare_data(self) -> float:
        """Synthetic cases at the check's shape, fingerprinted, planned (the planner's own 24 GB
        plan at ``gpu`` sizes) and preprocessed for ``3d_fullres``; reused when already there."""
        if (self.preprocessed / "splits.json").is_file():
            return 0.0
        shape = ",".join(str(s) for s in self.sizes.shape)
        seconds = self.mmrobust("make-synthetic", "-o", str(self.root / "raw" / DATASET), "--cases",
                                str(self.sizes.n_cases), "--shape", shape, "--seed", "0", log="make-synthetic")
        seconds += self.mmrobust("plan_and_preprocess", "-d", DATASET, "-c", "3d_fullres", "-np",
                                 str(min(4, os.cpu_count() or 1)), *self.sizes.plan_args, log="plan_and_preprocess")
        return seconds

    def train_checkpoint(self, timeout: float) -> Path:
        """A 3D model trained for a few iterations (what inference and evaluation read)."""
        self.mmrobust("train", "-d", DATASET, "-c", "3d_fullres", "-f", "0", "--epochs", "1", "--iters-per-epoch",
                      str(self.sizes.checkpoint_iterations), "--val-patches-per-case", "1", "--num-workers", "0",
                      "--device", self.device, timeout=timeout, log="train")
        return first_match(self.results.glob(f"{DATASET}/3d_fullres__*/fold_0"), f"run folder under {self.results}")
