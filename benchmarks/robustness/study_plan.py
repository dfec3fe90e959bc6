"""What the robustness study runs: the budgets (data, plan, training length), the methods, and
the runs (method x seed) with their command lines.

Every method trains on the same data, split and plan, with the same optimiser and length; a
method differs from ``plain`` only by the options in its ``train_args``. Seeds change the network
initialisation, the patch sampling and the augmentation, never the data or the split.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

#: Bumped when the meaning of a budget or a method changes, so old outputs are not reused.
STUDY_SCHEMA_VERSION = 1
#: The synthetic study's dataset name (a real dataset keeps its folder's name).
DATASET = "BraTS2018"


@dataclass(frozen=True)
class Budget:
    """Data, plan and training length of one study size.

    ``cases`` = train + val + test; the split gives training and checkpoint selection (validation)
    cases, and the test cases are in no fold: ``mmrobust evaluate --cases test`` scores only them.
    """

    name: str
    description: str
    shape: tuple[int, int, int]
    train_cases: int
    val_cases: int
    test_cases: int
    configuration: str
    plan_args: tuple[str, ...]
    epochs: int
    iters_per_epoch: int
    val_patches_per_case: int
    optimizer_args: tuple[str, ...] = ("--optimizer", "adam", "--lr", "3e-3")
    jobs: int = 2
    device: str = "cpu"
    #: The methods this budget runs when ``--methods`` is not given (None: all of them).
    methods: tuple[str, ...] | None = None

    @property
    def cases(self) -> int:
        return self.train_cases + self.val_cases + self.test_cases

    def to_dict(self) -> dict:
        return asdict(self)


BUDGETS: dict[str, Budget] = {
    # A minute: checks the pipeline end to end (the suite runs it); its numbers mean nothing.
    "smoke": Budget("smoke", "pipeline check only, no result", (48, 48, 48), 6, 2, 2, "2d",
                    ("--patch-size", "32,32", "--batch-size", "4", "--base-features", "4"), 1, 3, 1),
    # About an hour on the project's 2-core CPU: 2D, a CPU-sized network, 800 iterations, after
    # which plain's validation Dice is flat (checked in the report).
    "small": Budget("small", "2-core CPU, about an hour", (64, 64, 64), 16, 4, 10, "2d",
                    ("--patch-size", "48,48", "--batch-size", "8", "--base-features", "8"), 16, 50, 8),
    # The small study trained 2.5 times longer, for the methods whose verdict matters most: does the
    # ranking survive where the small budget's validation curves are still rising?
    "small-long": Budget("small-long", "2-core CPU, the small study trained 2.5x longer, 5 methods", (64, 64, 64),
                         16, 4, 10, "2d", ("--patch-size", "48,48", "--batch-size", "8", "--base-features", "8"),
                         40, 50, 8, methods=("plain", "gmd", "cggm", "weighted", "weighted_all")),
    # The same study at a size worth a GPU: 3D, the planner's own 24 GB plan, 25,000 iterations.
    "full": Budget("full", "one GPU, 3D, the planner's 24 GB plan", (128, 128, 128), 40, 5, 15, "3d_fullres",
                   (), 100, 250, 4, jobs=1, device="cuda"),
}


@dataclass(frozen=True)
class Method:
    """One row of the study: ``train_args`` added to the common training command. ``cost`` is
    its expected training time relative to ``plain`` (measured, used to schedule long runs first)."""

    name: str
    label: str
    train_args: tuple[str, ...]
    cost: float
    question: str = ""


#: Every DS method samples the same k=5 subsets per step (docs/design.md §6.1: the paper's complexity fix),
#: so that methods differ by their gradient rule only; ``plain_all`` says what k=5 costs plain.
#: Every option a method depends on is spelt out, so that a later change of mmrobust's defaults
#: cannot change what a finished run measured.
K5 = ("--subsets", "k=5")
MEAN = ("--fusion", "mean")
SMOOTHED = ("--cggm-balance", "smoothed", "--cggm-ema", "0.98", "--cggm-rho", "1.2", "--cggm-lambda", "0.1")
RAW = ("--cggm-balance", "raw", "--cggm-rho", "1.2", "--cggm-lambda", "0.1")
HEADS = ("--cggm-direction", "gradients")
METHODS: tuple[Method, ...] = (
    Method("early_fusion", "early fusion (modality dropout)", ("--model", "early_fusion", "--strategy", "plain"), 0.8,
           "the classic baseline: one U-Net on zero-filled channels"),
    Method("plain", "DS plain", ("--strategy", "plain", *K5, *MEAN), 1.0, "the DS network without a gradient rule"),
    Method("plain_all", "DS plain, all 15 subsets", ("--strategy", "plain", "--subsets", "all", *MEAN), 1.2,
           "does sampling 5 of the 15 subsets per step cost accuracy?"),
    Method("gmd", "DS GMD (exact)", ("--strategy", "gmd", "--gmd-scope", "full", *K5, *MEAN), 2.3,
           "GMD as the paper defines it"),
    Method("gmd_head", "DS GMD (head scope)", ("--strategy", "gmd", "--gmd-scope", "head", *K5, *MEAN), 1.9,
           "conflicts measured on the last decoder stage only"),
    Method("gmd_output", "DS GMD (output scope)", ("--strategy", "gmd", "--gmd-scope", "output", *K5, *MEAN), 1.1,
           "conflicts measured on the output layers only"),
    Method("cggm_raw", "DS CGGM, paper's raw B", ("--strategy", "cggm", *RAW, *HEADS, *K5, *MEAN), 1.1,
           "CGGM as the paper writes it (before: B from one batch's change)"),
    Method("cggm", "DS CGGM, smoothed B", ("--strategy", "cggm", *SMOOTHED, *HEADS, *K5, *MEAN), 1.1,
           "after: B from each modality's smoothed improvement"),
    Method("cggm_magnitude", "DS CGGM, B only (lambda 0)",
           ("--strategy", "cggm", "--cggm-balance", "smoothed", "--cggm-ema", "0.98", "--cggm-rho", "1.2",
            "--cggm-lambda", "0", *HEADS, *K5, *MEAN), 1.0,
           "ablation: CGGM's magnitude term alone, without the direction loss"),
    Method("cggm_branches", "DS CGGM, branch direction",
           ("--strategy", "cggm", *SMOOTHED, "--cggm-direction", "branches", *K5, *MEAN), 1.1,
           "L_gm against each branch's own gradient at the shared output layer"),
    Method("gmd_cggm_before", "DS GMD+CGGM, before",
           ("--strategy", "gmd+cggm", "--gmd-scope", "full", "--gmd-cggm-composition", "rows", *RAW, *HEADS, *K5,
            *MEAN), 2.4, "the previous default: raw B, L_gm inside every subset gradient"),
    Method("gmd_cggm", "DS GMD+CGGM",
           ("--strategy", "gmd+cggm", "--gmd-scope", "full", "--gmd-cggm-composition", "apart", *SMOOTHED, *HEADS,
            *K5, *MEAN), 2.4, "after: smoothed B, GMD on the subset gradients, L_gm added once"),
    Method("weighted", "DS plain, weighted fusion", ("--strategy", "plain", *K5, "--fusion", "weighted"), 1.0,
           "a fusion that learns how much each modality counts per region"),
    Method("weighted_all", "DS plain, weighted fusion, all 15 subsets",
           ("--strategy", "plain", "--subsets", "all", "--fusion", "weighted"), 1.0,
           "the weighted fusion with every subset in every step"),
    Method("weighted_gmd", "DS GMD, weighted fusion",
           ("--strategy", "gmd", "--gmd-scope", "full", *K5, "--fusion", "weighted"), 2.3,
           "the weighted fusion with exact GMD"),
)
METHODS_BY_NAME: dict[str, Method] = {m.name: m for m in METHODS}
BASELINE = "plain"


@dataclass(frozen=True)
class StudyRun:
    """One training run and its evaluation: ``<root>/runs/<method>/seed_<s>/``."""

    method: Method
    seed: int
    root: Path = field(compare=False)

    @property
    def folder(self) -> Path:
        return self.root / "runs" / self.method.name / f"seed_{self.seed}"

    @property
    def results(self) -> Path:
        """The run's own ``--results`` base (each run has one, so strategies and seeds never share)."""
        return self.folder / "results"

    @property
    def label(self) -> str:
        return f"{self.method.name} seed {self.seed}"


def train_command(run: StudyRun, budget: Budget, dataset: str = DATASET) -> list[str]:
    """The ``mmrobust train`` arguments of ``run`` (without the executable)."""
    return ["train", "-d", dataset, "-c", budget.configuration, "-f", "0", "--epochs", str(budget.epochs),
            "--iters-per-epoch", str(budget.iters_per_epoch), *budget.optimizer_args,
            "--val-patches-per-case", str(budget.val_patches_per_case), "--seed", str(run.seed),
            "--num-workers", "1", "--device", budget.device, *run.method.train_args,
            "--results", str(run.results)]


def evaluate_command(run_dir: Path, output: Path, budget: Budget) -> list[str]:
    """The ``mmrobust evaluate`` arguments: all 15 subsets of the test cases, which no fold trains
    or selects checkpoints on."""
    return ["evaluate", "-m", str(run_dir), "--cases", "test", "--subsets", "all", "-o", str(output),
            "-np", "1", "--device", budget.device]


def study_runs(root: Path, methods: tuple[Method, ...], seeds: int) -> list[StudyRun]:
    """Every (method, seed), the most expensive first (so that the slowest runs do not start last)."""
    runs = [StudyRun(m, s, root) for m in methods for s in range(seeds)]
    return sorted(runs, key=lambda r: (-r.method.cost, r.method.name, r.seed))


def select_methods(spec: str | None, budget: Budget | None = None) -> tuple[Method, ...]:
    """``--methods a,b``: those methods (the baseline always included); None: the budget's, or all."""
    if not spec:
        if budget is None or budget.methods is None:
            return METHODS
        spec = ",".join(budget.methods)
    names = [n.strip() for n in spec.split(",") if n.strip()]
    unknown = [n for n in names if n not in METHODS_BY_NAME]
    if unknown:
        raise ValueError(f"--methods: unknown {', '.join(unknown)} (known: {', '.join(METHODS_BY_NAME)})")
    if BASELINE not in names:
        names.insert(0, BASELINE)
    return tuple(METHODS_BY_NAME[n] for n in names)
