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

from mmseg_robust.data.layouts import LAYOUT_NAMES
from mmseg_robust.data.synthetic.writer import SyntheticSpec, make_synthetic_dataset

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
