"""benchmarks/gpu_check.py at toy sizes on the CPU, as the suite must run it so that the script a
lent GPU runs cannot rot: every part writes its section, measured or skipped with a reason, and a
check cut short by its time still writes what it has."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.py"
PARTS = ["environment", "training", "compile", "inference", "distributed", "study"]


def run_check(output: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--tiny", "-o", str(output), *extra],
                          capture_output=True, text=True, timeout=600, cwd=output.parent)


@pytest.fixture(scope="module")
def tiny_check(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    output = tmp_path_factory.mktemp("gpu_check") / "out"
    return output, run_check(output)


def test_every_part_is_measured_or_skipped_with_its_reason(tiny_check):
    output, result = tiny_check
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((output / "gpu_check.json").read_text())
    assert report["sizes"] == "tiny" and report["device"] == "cpu"
    parts = {part["name"]: part for part in report["parts"]}
    assert list(parts) == PARTS
    assert all(part["status"] == "measured" for part in parts.values()), {n: p["reason"] for n, p in parts.items()}
    assert parts["environment"]["rows"][0]["torch"]
    training = parts["training"]["rows"]
    measured = [row for row in training if "it_per_s" in row]
    assert {(r["precision"], r["strategy"]) for r in measured} == {
        (amp, s) for amp in ("off", "bf16") for s in ("plain", "gmd k=5", "cggm")}
    assert all(r["it_per_s"] > 0 and r["losses_finite"] for r in measured)
    assert all(r["planner_estimate_gib"] > 0 for r in measured)
    fp16 = [row for row in training if row["precision"] == "fp16"]
    assert len(fp16) == 3 and all("CUDA" in row["skipped"] for row in fp16)
    assert [row["compile"] for row in parts["compile"]["rows"]] == ["off", "eager"]
    commands = [row["command"] for row in parts["inference"]["rows"]]
    assert commands == ["predict --tta", "predict --no-tta", "predict --no-tta (full modalities)",
                        "evaluate --subsets all (15)"]
    assert any("predict --no-tta of the same case" in note for note in parts["inference"]["notes"])
    assert all(math.isfinite(row["seconds"]) and row["seconds"] > 0 for row in parts["inference"]["rows"])
    assert parts["distributed"]["rows"][0]["checkpoint_written"] is True
    assert any("nccl: skipped" in note for note in parts["distributed"]["notes"])
    assert parts["study"]["rows"][0]["budget"] == "full"
    # The evaluation of 15 subsets really ran: its summary holds every subset.
    summary = json.loads((output / "work" / "evaluation" / "summary.json").read_text())
    assert "Full" in json.dumps(summary) and "Fl." in json.dumps(summary)


def test_the_markdown_has_a_section_per_part_and_the_table_is_printed(tiny_check):
    output, result = tiny_check
    markdown = (output / "gpu_check.md").read_text()
    for title in ("1. Environment", "2. 3D training", "3. torch.compile", "4. Inference", "5. torchrun",
                  "6. Robustness study"):
        assert f"## {title}" in markdown
    assert "| precision | strategy |" in markdown and markdown.strip() in result.stdout


def test_a_check_out_of_time_stops_each_part_and_still_writes_them(tiny_check):
    output, _ = tiny_check
    result = run_check(output, "--minutes", "0")
    assert result.returncode == 0, result.stderr[-3000:]
    parts = {p["name"]: p for p in json.loads((output / "gpu_check.json").read_text())["parts"]}
    assert list(parts) == PARTS
    for name in ("training", "compile", "inference", "distributed", "study"):
        assert parts[name]["status"] == "stopped at its time share", (name, parts[name])
        assert parts[name]["reason"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_asking_for_cuda_without_it_is_one_line(tmp_path):
    result = subprocess.run([sys.executable, str(SCRIPT), "--device", "cuda", "-o", str(tmp_path / "out")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == "gpu_check: --device cuda: CUDA is not available on this machine"
    assert not (tmp_path / "out").exists()
