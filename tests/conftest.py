"""Shared fixtures: small synthetic datasets on disk and a runner for the real CLI."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest
import torch
from xdist.scheduler import LoadScopeScheduling

from mmseg_robust.data.discovery import discover_dataset
from mmseg_robust.data.layouts import LAYOUT_NAMES
from mmseg_robust.data.synthetic.writer import SyntheticSpec, make_synthetic_dataset

# Under pytest-xdist (``make test`` runs two workers on the two cores) every process keeps to one
# OpenMP thread: the workers, and the CLI subprocesses and trainers they start, which inherit the
# variable (the trainer takes it as a cap). Two workers with two threads each would oversubscribe
# the cores, and spinning OpenMP threads slow every op down many times.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)

#: Small but tumour-bearing volumes keep the suite fast on two CPU cores.
TEST_SHAPE = (40, 48, 48)
TEST_CASES = 4

CliRunner = Callable[..., subprocess.CompletedProcess]


def _clean_environment(extra: dict[str, str] | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMROBUST_")}
    env.update(extra or {})
    return env


@pytest.fixture(scope="session")
def run_cli() -> CliRunner:
    """Run ``python -m mmseg_robust ARGS`` in a subprocess with only the given MMROBUST_* variables."""

    def run(*args: object, env: dict[str, str] | None = None, cwd: Path | None = None,
            timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "mmseg_robust", *map(str, args)],
                              capture_output=True, text=True, env=_clean_environment(env), cwd=cwd,
                              timeout=timeout)

    return run


@pytest.fixture(scope="session")
def synthetic_datasets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One clean synthetic dataset per layout (read-only by convention: copy before mutating)."""
    root = tmp_path_factory.mktemp("synthetic")
    return {layout: make_synthetic_dataset(root / layout, SyntheticSpec(layout, TEST_CASES, TEST_SHAPE, seed=3),
                                           progress=False)
            for layout in LAYOUT_NAMES}


@pytest.fixture
def copy_dataset(tmp_path: Path, synthetic_datasets: dict[str, Path]) -> Callable[[str], Path]:
    """Copy a layout's dataset to ``tmp_path/raw/<name>`` so a test may break it."""

    def copy(layout: str, name: str = "BraTS") -> Path:
        target = tmp_path / "raw" / name
        shutil.copytree(synthetic_datasets[layout], target)
        return target

    return copy


def tree_digest(root: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of every file under ``root`` (hidden files included)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def digest() -> Callable[[Path], dict[str, str]]:
    return tree_digest


@pytest.fixture
def single_torch_thread():
    """Tiny models: one torch thread is as fast, and immune to oversubscription when other test
    suites share the cores (OpenMP workers spin while they wait)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _preprocessed_tiny_dataset(root: Path, name: str, cases: int, configurations: tuple[str, ...],
                               seed: int) -> tuple[Path, dict[str, str]]:
    """A small synthetic BraTS 2021 dataset, fingerprinted, planned with 4 base features (a CPU
    step takes milliseconds), preprocessed and split; returns (raw folder, MMROBUST_* variables)."""
    from mmseg_robust.planners.experiment_planner import PlanningRequest

    from mmseg_robust.plan_and_preprocess import (
        DatasetLocation,
        ensure_splits,
        run_extract_fingerprint,
        run_plan,
        run_preprocess,
    )

    raw = make_synthetic_dataset(root / "raw" / name, SyntheticSpec("brats2021", cases, (32, 40, 40), seed=seed),
                                 progress=False)
    location = DatasetLocation(name, raw, root / "pre" / name)
    dataset = discover_dataset(raw)
    run_extract_fingerprint(location, dataset, progress=False)
    run_plan(location, PlanningRequest(base_features=4))
    run_preprocess(location, dataset, configurations, progress=False)
    ensure_splits(location, [c.case_id for c in dataset.cases])
    return raw, {"MMROBUST_PREPROCESSED": str(root / "pre"), "MMROBUST_RESULTS": str(root / "results")}


@pytest.fixture(scope="session")
def preprocessed_tiny_dataset() -> Callable[..., tuple[Path, dict[str, str]]]:
    """Builder of small preprocessed datasets for training and prediction tests (see
    :func:`_preprocessed_tiny_dataset`); module fixtures call it with their own folder."""
    return _preprocessed_tiny_dataset


def _train_in_process(env: dict[str, str], dataset: str, configuration: str = "3d_fullres", **fields: object) -> Path:
    """Train a tiny run through the Python API (a fixture's model: no interpreter start-up and
    imports per run, which cost a CLI subprocess several seconds); returns its results folder.
    ``fields`` are :class:`~mmseg_robust.runs.config.TrainingConfig` fields beyond the fast defaults."""
    from mmseg_robust.runs.config import TrainingConfig
    from mmseg_robust.training.trainer import train

    settings = {"fold": 0, "epochs": 1, "iters_per_epoch": 2, "num_workers": 0, "device": "cpu",
                "val_patches_per_case": 1, **fields}
    config = TrainingConfig(dataset, configuration, **settings)
    return train(config, Path(env["MMROBUST_PREPROCESSED"]) / dataset, Path(env["MMROBUST_RESULTS"]),
                 progress=False).output_dir


@pytest.fixture(scope="session")
def train_in_process() -> Callable[..., Path]:
    """Trainer of tiny runs for fixtures (see :func:`_train_in_process`)."""
    return _train_in_process


@pytest.fixture(scope="session")
def paper_columns() -> list[str]:
    """The column header of GMD's Table 2 (BraTS 2018), copied from the paper's text."""
    return "Fl. T2 T1c T1 T2,Fl. T1c,Fl. T1c,T2 T1,Fl. T1,T2 T1,T1c ~T1 ~T1c ~T2 ~Fl. Full Avg.".split()


#: Modules whose tests are long and independent of each other: each of their tests is a unit of
#: work of its own, so xdist spreads them over the workers (each worker builds the module's cheap
#: dataset fixture once). Every other module is one unit, so its trained-model fixtures are built once.
SPREAD_MODULES = frozenset({"test_training.py"})

#: The slowest modules (``pytest --durations=0``, summed per module), longest first: they are handed
#: out first so that the two workers finish together instead of one waiting on a late long module.
SLOWEST_FIRST = ("test_training.py", "test_robustness_study.py", "test_sentiment_study.py", "test_gpu_check.py",
                 "test_evaluate_model.py",
                 "test_inference.py", "test_sentiment_fusion_and_dedicated.py", "test_sentiment_training.py",
                 "test_training_policy.py", "test_networks.py", "test_planning.py", "test_plan_and_preprocess.py",
                 "test_split_presets.py")


class ModuleScheduling(LoadScopeScheduling):
    """xdist's ``loadscope`` with a module as the scope (``SPREAD_MODULES`` excepted), in collection order."""

    def _split_scope(self, nodeid: str) -> str:
        module = nodeid.split("::", 1)[0]
        return nodeid if Path(module).name in SPREAD_MODULES else module


@pytest.hookimpl(optionalhook=True)  # pytest -p no:xdist knows no such hook
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> ModuleScheduling | None:
    return ModuleScheduling(config, log) if config.getvalue("dist") == "loadscope" else None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Slowest modules first (a stable sort keeps each module's own order and contiguity)."""
    rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
