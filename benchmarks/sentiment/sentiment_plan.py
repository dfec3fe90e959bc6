"""What the sentiment study runs: the budgets (data size, training length, seeds), the arms and
the runs (arm x seed) with their command lines.

Every arm trains on the same synthetic MOSI file (graded signal: audio and vision each carry a
part of the label that language does not) with the same settings; an arm differs from its
baseline only by ``--strategy``, ``--fusion`` or ``--modalities``. Seeds change the
initialisation, dropout and batch order, never the data. The arms a verdict rests on (the
dedicated models and every strategy under the learned fusion) get ``verdict_seeds`` seeds; the
mean-fusion arms are descriptive and get ``other_seeds``.

The learned fusion is chosen before any verdict arm runs, by a rule fixed here: ``plain`` under
each learned fusion for ``selection_seeds`` seeds, and the fusion with the lower mean best
validation MAE (the checkpoint-selection score) wins. The test split plays no part in the choice.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from mmseg_robust.sentiment.dataset import MODALITIES

#: Bumped when the meaning of a budget, an arm or an endpoint changes, so old outputs are not reused.
STUDY_SCHEMA_VERSION = 1
#: The weak modalities (E1) and the dominant one (the best single model of E2).
WEAK = ("a", "v")
DOMINANT = "l"
STRATEGIES = ("plain", "gmd", "cggm", "gmd+cggm")
#: The candidates of the learned fusion; the mean is the papers' (GMD's DS fusion).
LEARNED_FUSIONS = ("weighted", "gated")
MEAN_FUSION = "mean"
#: The data seed of the final table; seed 0 was used while building the generator and the study.
DEVELOPMENT_DATA_SEED = 0
FINAL_DATA_SEED = 1


@dataclass(frozen=True)
class Budget:
    """Data size, training length and seeds of one study size."""

    name: str
    description: str
    samples: tuple[int, int, int]
    epochs: int
    batch_size: int = 32
    verdict_seeds: int = 5
    other_seeds: int = 3
    selection_seeds: int = 3
    jobs: int = 2

    def to_dict(self) -> dict:
        return asdict(self)


BUDGETS: dict[str, Budget] = {
    # Seconds: checks the pipeline end to end (the suite runs it); its numbers mean nothing.
    "smoke": Budget("smoke", "pipeline check only, no result", (40, 16, 24), 1, 8, verdict_seeds=2, other_seeds=1,
                    selection_seeds=1),
    # The real MOSI split sizes; about 40 minutes on the project's 2-core CPU, two runs at a time.
    # Six epochs: on this data every DS run's validation MAE is best within the first three epochs
    # (language overfits after that), and the checkpoint is chosen on validation.
    "mosi": Budget("mosi", "MOSI's split sizes, 2-core CPU, about 40 minutes", (1284, 229, 686), 6),
    # Real MOSI / MOSEI (``--data``; its splits are the file's): the training length of MulT and
    # CGGM on MOSI. A GPU (``--device cuda``) or hours of CPU.
    "real": Budget("real", "a real MOSI/MOSEI file (--data), MulT's 40 epochs", (0, 0, 0), 40),
}


@dataclass(frozen=True)
class Arm:
    """One training method: its options of ``mmrobust sentiment train`` and its seeds' role."""

    name: str
    label: str
    train_args: tuple[str, ...]
    role: str  # "dedicated", "selection", "verdict", "descriptive" or "post-hoc"
    fusion: str = ""
    strategy: str = "plain"
    modalities: tuple[str, ...] = MODALITIES


def dedicated_arm(modality: str) -> Arm:
    return Arm(f"only_{modality}", f"dedicated {modality} (U. base.)", ("--modalities", modality), "dedicated",
               modalities=(modality,))


def ds_arm(fusion: str, strategy: str, role: str) -> Arm:
    return Arm(f"{fusion}_{strategy}", f"DS {strategy}, {fusion} fusion", ("--fusion", fusion, "--strategy", strategy),
               role, fusion, strategy)


def first_stage_arms() -> tuple[Arm, ...]:
    """What runs before the learned fusion is chosen: the dedicated models, plain under each
    learned fusion (the selection), and every strategy under the mean."""
    return (tuple(dedicated_arm(m) for m in MODALITIES)
            + tuple(ds_arm(fusion, "plain", "selection") for fusion in LEARNED_FUSIONS)
            + tuple(ds_arm(MEAN_FUSION, strategy, "descriptive") for strategy in STRATEGIES))


def verdict_arms(fusion: str) -> tuple[Arm, ...]:
    """Every strategy under the chosen learned fusion (plain is the baseline of the verdicts)."""
    return tuple(ds_arm(fusion, strategy, "verdict") for strategy in STRATEGIES)


def post_hoc_arms(fusion: str) -> tuple[Arm, ...]:
    """Added after the final table was read, run only when asked for, never in the family: plain
    and CGGM trained on the full input only (``--subsets full``), the papers' joint training, where
    a dominant modality can starve the others; DS training over every subset supervises each branch
    on its own."""
    return tuple(Arm(f"{fusion}_{strategy}_fullonly", f"DS {strategy}, {fusion} fusion, Full only (post hoc)",
                     ("--fusion", fusion, "--strategy", strategy, "--subsets", "full"), "post-hoc", fusion, strategy)
                 for strategy in ("plain", "cggm"))


def seeds_of(arm: Arm, budget: Budget) -> int:
    return {"dedicated": budget.verdict_seeds, "verdict": budget.verdict_seeds, "selection": budget.selection_seeds,
            "descriptive": budget.other_seeds, "post-hoc": budget.other_seeds}[arm.role]


@dataclass(frozen=True)
class StudyRun:
    arm: Arm
    seed: int
    folder: Path


def study_runs(root: Path, arms: tuple[Arm, ...], budget: Budget) -> list[StudyRun]:
    """Arm x seed, each arm once (a selection arm that is also a verdict arm takes the larger count)."""
    counts: dict[str, tuple[Arm, int]] = {}
    for arm in arms:
        seeds = seeds_of(arm, budget)
        if arm.name not in counts or counts[arm.name][1] < seeds:
            counts[arm.name] = (arm, seeds)
    return [StudyRun(arm, seed, root / "runs" / arm.name / f"seed_{seed}")
            for arm, seeds in counts.values() for seed in range(seeds)]


def mmrobust() -> list[str]:
    """The CLI of the interpreter running the study (the project's virtual environment)."""
    return [sys.executable, "-m", "mmseg_robust"]


def train_command(run: StudyRun, data: Path, budget: Budget, device: str = "cpu") -> list[str]:
    return [*mmrobust(), "sentiment", "train", "--data", str(data), "-o", str(run.folder), *run.arm.train_args,
            "--seed", str(run.seed), "--epochs", str(budget.epochs), "--batch-size", str(budget.batch_size),
            "--device", device]


def evaluate_command(run: StudyRun, data: Path, device: str = "cpu") -> list[str]:
    return [*mmrobust(), "sentiment", "evaluate", "--data", str(data), "-m", str(run.folder), "-o",
            str(run.folder / "evaluation_test"), "--device", device]
