"""What the robustness study runs: the budgets (data, plan, training length), the data variants,
the arms (methods) with their seeds, and the runs (arm x seed) with their command lines.

Every DS arm trains on the same data, split and plan with the same training length; an arm
differs from its baseline only by the options in its ``train_args`` (``baseline`` names it), so a
comparison isolates one change. Seeds change the network initialisation, the patch sampling and the
augmentation, never the data or the split. The arms a verdict rests on get
``Budget.verdict_seeds`` seeds, the others ``Budget.other_seeds``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

#: Bumped when the meaning of a budget, an arm or an endpoint changes, so old outputs are not reused.
STUDY_SCHEMA_VERSION = 2
#: The synthetic study's dataset name (a real dataset keeps its folder's name).
DATASET = "BraTS2018"
#: ``make-synthetic --core-contrast`` of the study's data: ``graded`` is the primary data (every
#: sequence informative, T1ce much easier: the papers' situation), ``t1ce-only`` the secondary (the
#: weak sequences carry no core signal: it tests the fusion's dilution only).
DATA_VARIANTS: tuple[str, ...] = ("graded", "t1ce-only")
#: The data seed the study was developed on (calibration, fusion design) and the one its final
#: table comes from, which nobody looked at while developing (docs/design.md §15).
DEVELOPMENT_DATA_SEED = 0
FINAL_DATA_SEED = 1
#: The weak sequences (everything but the dominant T1ce), and the dominant one.
WEAK = ("flair", "t2", "t1")
DOMINANT = "t1ce"


@dataclass(frozen=True)
class Budget:
    """Data, plan, training length and seeds of one study size.

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
    verdict_seeds: int = 5
    other_seeds: int = 3
    #: Arms left out unless ``--methods`` names them (their cost does not fit the budget's time).
    skipped: tuple[str, ...] = ()

    @property
    def cases(self) -> int:
        return self.train_cases + self.val_cases + self.test_cases

    def to_dict(self) -> dict:
        return asdict(self)


_CPU_PLAN = ("--patch-size", "48,48", "--batch-size", "8", "--base-features", "8")
BUDGETS: dict[str, Budget] = {
    # A minute or two: checks the pipeline end to end (the suite runs it); its numbers mean nothing.
    "smoke": Budget("smoke", "pipeline check only, no result", (48, 48, 48), 6, 2, 3, "2d",
                    ("--patch-size", "32,32", "--batch-size", "4", "--base-features", "4"), 1, 3, 1,
                    verdict_seeds=2, other_seeds=1),
    # About two hours on the project's 2-core CPU, two runs at a time: 2D, a CPU-sized network,
    # 20 test cases (15 with ET), 1600 iterations (plain's validation curve must be flat: the report
    # checks it and withholds verdicts when it is not). GMD over all 15 subsets costs about 4x plain
    # on the CPU (15 backward passes a step), so only its released missing-2 recipe runs by default.
    "small": Budget("small", "2-core CPU, about two hours", (64, 64, 64), 16, 4, 20, "2d", _CPU_PLAN, 32, 50, 8,
                    skipped=("gmd",)),
    # The same study at a size worth a GPU: 3D, the planner's own 24 GB plan, 25,000 iterations.
    "full": Budget("full", "one GPU, 3D, the planner's 24 GB plan", (128, 128, 128), 40, 5, 20, "3d_fullres",
                   (), 100, 250, 4, jobs=1, device="cuda"),
}


@dataclass(frozen=True)
class Method:
    """One arm: ``train_args`` added to the common training command.

    ``cost``: expected training time relative to DS ``plain`` (measured; long runs start first).
    ``baseline``: the arm it differs from by its own options only (its E1 comparison); None for the
    baseline itself and the dedicated models. ``verdict``: a pre-registered comparison rests on it
    (more seeds). ``modality``: a dedicated model's only sequence. ``origin``: ``paper``,
    ``released`` (the authors' code), ``project`` (this project's variant), ``reference`` or
    ``diagnostic`` (added after the final table was read; run only when named)."""

    name: str
    label: str
    train_args: tuple[str, ...]
    cost: float
    question: str = ""
    baseline: str | None = None
    verdict: bool = False
    modality: str | None = None
    origin: str = "reference"
    optimizer_args: tuple[str, ...] | None = None

    def seeds(self, budget: Budget) -> int:
        return budget.verdict_seeds if self.verdict else budget.other_seeds


#: Every option an arm depends on is spelt out, so that a later change of mmrobust's defaults cannot
#: change what a finished run measured.
ALL, MISSING_2, FULL_ONLY = ("--subsets", "all"), ("--subsets", "missing-2"), ("--subsets", "full")
MEAN = ("--fusion", "mean")
EXACT_GMD = ("--strategy", "gmd", "--gmd-scope", "full")
#: CGGM's Table 7 recipe for BraTS: SGD, lr 1e-2, weight decay 3e-4 (its cosine schedule with warm-up
#: is replaced by mmrobust's poly schedule; momentum is mmrobust's 0.99, Nesterov).
SGD_TABLE7 = ("--optimizer", "sgd", "--lr", "1e-2", "--weight-decay", "3e-4")
CGGM_RELEASED = ("--strategy", "cggm", "--cggm-balance", "raw", "--cggm-rho", "1.2", "--cggm-lambda", "0.1",
                 "--cggm-direction", "weights", "--cggm-magnitude-scope", "modality")
CGGM_OURS = ("--strategy", "cggm", "--cggm-balance", "smoothed", "--cggm-ema", "0.98", "--cggm-rho", "1.2",
             "--cggm-lambda", "0.1", "--cggm-direction", "gradients", "--cggm-magnitude-scope", "branch")
#: The learned fusion GMD is also tried on (the better of weighted and gated on the development seed).
BETTER_FUSION = "weighted"


def _dedicated(modality: str, label: str) -> Method:
    return Method(f"dedicated_{modality}", f"dedicated {label} model (U. base.)",
                  ("--modalities", modality, "--strategy", "plain", *ALL, *MEAN), 0.3,
                  f"what {label} alone can reach: GMD Table 1's U. base.", verdict=True, modality=modality)


METHODS: tuple[Method, ...] = (
    _dedicated("flair", "FLAIR"), _dedicated("t2", "T2"), _dedicated("t1", "T1"), _dedicated("t1ce", "T1ce"),
    Method("plain", "DS plain", ("--strategy", "plain", *ALL, *MEAN), 1.0,
           "the DS network without a gradient rule, every subset each step", verdict=True),
    Method("plain_m2", "DS plain, missing-2", ("--strategy", "plain", *MISSING_2, *MEAN), 0.6,
           "the two-sequence subsets only: GMD's released recipe without GMD", verdict=True),
    Method("gmd_m2", "DS GMD exact, missing-2 (released recipe)", (*EXACT_GMD, *MISSING_2, *MEAN), 1.6,
           "GMD as released (missing_num=2): does it rescue the weak sequences?", baseline="plain_m2",
           verdict=True, origin="released"),
    Method("gmd", "DS GMD exact, all subsets (Table 5's best)", (*EXACT_GMD, *ALL, *MEAN), 3.5,
           "GMD over all 15 subsets", baseline="plain", origin="paper"),
    Method("plain_sgd", "DS plain, SGD (CGGM Table 7)", ("--strategy", "plain", *ALL, *MEAN), 1.0,
           "the baseline of CGGM as released, under its optimiser", verdict=True, optimizer_args=SGD_TABLE7),
    Method("cggm_released", "DS CGGM as released (weights direction, Eq. 8 magnitude, SGD)",
           (*CGGM_RELEASED, *ALL, *MEAN), 1.1, "CGGM as its authors' code runs it", baseline="plain_sgd",
           verdict=True, origin="released", optimizer_args=SGD_TABLE7),
    Method("cggm", "DS CGGM, this project's (smoothed B, gradient direction, branch magnitude)",
           (*CGGM_OURS, *ALL, *MEAN), 1.1, "this project's CGGM variant", baseline="plain", verdict=True,
           origin="project"),
    Method("weighted", "DS plain, weighted fusion", ("--strategy", "plain", *ALL, "--fusion", "weighted"), 1.0,
           "learned per-region weights of each sequence", baseline="plain", origin="project"),
    Method("gated", "DS plain, gated fusion", ("--strategy", "plain", *ALL, "--fusion", "gated"), 1.2,
           "weights per voxel from each branch's own features", baseline="plain", origin="project"),
    Method("gmd_fusion", f"DS GMD exact, missing-2, {BETTER_FUSION} fusion",
           (*EXACT_GMD, *MISSING_2, "--fusion", BETTER_FUSION), 1.6, "GMD on the better learned fusion",
           baseline="gmd_m2", origin="project"),
    # Added after the final table was first read (post hoc, descriptive, never in the verdict family):
    # DS training over subsets gives every weak branch its own loss, so the starvation the papers
    # describe (joint training on all sequences) may not arise at all; these arms train on Full only.
    Method("plain_full", "DS plain, Full only (joint training; post hoc)", ("--strategy", "plain", *FULL_ONLY, *MEAN),
           0.3, "joint training, the papers' setting: are the weak branches starved there?", baseline="plain",
           origin="diagnostic"),
    Method("cggm_full", "DS CGGM ours, Full only (post hoc)", (*CGGM_OURS, *FULL_ONLY, *MEAN), 0.4,
           "this project's CGGM where there is starvation to rescue", baseline="plain_full", origin="diagnostic"),
    Method("cggm_released_full", "DS CGGM's released rule, Adam, Full only (post hoc)",
           (*CGGM_RELEASED, *FULL_ONLY, *MEAN), 0.4,
           "the released rule where there is starvation to rescue (under the study's Adam, as plain_full)",
           baseline="plain_full", origin="diagnostic"),
)
#: Post-hoc arms: run only when ``--methods`` names them, reported with the other arms.
DIAGNOSTIC_ARMS = tuple(m.name for m in METHODS if m.origin == "diagnostic")
METHODS_BY_NAME: dict[str, Method] = {m.name: m for m in METHODS}
BASELINE = "plain"
DEDICATED: dict[str, str] = {m.modality: m.name for m in METHODS if m.modality}


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
    optimizer = run.method.optimizer_args or budget.optimizer_args
    return ["train", "-d", dataset, "-c", budget.configuration, "-f", "0", "--epochs", str(budget.epochs),
            "--iters-per-epoch", str(budget.iters_per_epoch), *optimizer,
            "--val-patches-per-case", str(budget.val_patches_per_case), "--seed", str(run.seed),
            "--num-workers", "1", "--device", budget.device, *run.method.train_args,
            "--results", str(run.results)]


def evaluate_command(run_dir: Path, output: Path, budget: Budget) -> list[str]:
    """The ``mmrobust evaluate`` arguments: every subset of the run's sequences on the test cases,
    which no fold trains or selects checkpoints on."""
    return ["evaluate", "-m", str(run_dir), "--cases", "test", "--subsets", "all", "-o", str(output),
            "-np", "1", "--device", budget.device]


def study_runs(root: Path, methods: tuple[Method, ...], budget: Budget, seeds: int | None = None) -> list[StudyRun]:
    """Every (method, seed), the most expensive first (so that the slowest runs do not start last).
    ``seeds`` overrides every arm's number of seeds."""
    runs = [StudyRun(m, s, root) for m in methods for s in range(seeds or m.seeds(budget))]
    return sorted(runs, key=lambda r: (-r.method.cost, r.method.name, r.seed))


def select_methods(spec: str | None, budget: Budget | None = None) -> tuple[Method, ...]:
    """``--methods a,b``: those arms plus the baselines their comparisons need (``plain`` and each
    arm's own, transitively; no baseline for dedicated models alone); None: all of them but the
    budget's ``skipped`` and the post-hoc ``DIAGNOSTIC_ARMS``. E1 needs the dedicated models: name them too."""
    if not spec:
        left_out = set(DIAGNOSTIC_ARMS) | set(budget.skipped if budget else ())
        return tuple(m for m in METHODS if m.name not in left_out)
    names = [n.strip() for n in spec.split(",") if n.strip()]
    unknown = [n for n in names if n not in METHODS_BY_NAME]
    if unknown:
        raise ValueError(f"--methods: unknown {', '.join(unknown)} (known: {', '.join(METHODS_BY_NAME)})")
    # A study of dedicated models only (the calibration of the data) needs no DS baseline.
    wanted = set(names) | ({BASELINE} if any(METHODS_BY_NAME[n].modality is None for n in names) else set())
    for name in list(wanted):
        while METHODS_BY_NAME[name].baseline and METHODS_BY_NAME[name].baseline not in wanted:
            name = METHODS_BY_NAME[name].baseline
            wanted.add(name)
    return tuple(m for m in METHODS if m.name in wanted)
