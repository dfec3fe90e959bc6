"""The parts that run ``mmrobust`` as its own process: inference (``predict`` with and without
mirroring, ``evaluate`` under all 15 subsets), multi-process training under ``torchrun``, and the
first run of the robustness study's ``full`` budget for a few iterations."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from mmseg_robust.data.splits import Splits

from .report import FAILED, PARTIAL, PartResult
from .workspace import DATASET, CheckStepError, Deadline, Workspace, first_match

ROBUSTNESS_STUDY = Path(__file__).resolve().parents[1] / "robustness"


def _stopped(part: PartResult, what: str) -> PartResult:
    part.status, part.reason = PARTIAL, f"{what} did not finish within its time share"
    return part


def _case_folder(raw: Path, case_id: str) -> Path:
    return first_match((p for p in raw.rglob(case_id) if p.is_dir()), f"case folder {case_id} under {raw}")


def inference_part(workspace: Workspace, deadline: Deadline) -> PartResult:
    """A 3D model trained for a few iterations, then ``predict`` of one BraTS-size case (240x240x155
    at ``gpu`` sizes, four sequences) with and without mirroring; ``evaluate`` of one of the check's
    own cases under all 15 subsets beside a full-modality ``predict`` of that case with evaluate's
    mirroring (``evaluate`` reads the cases of its run's dataset). At ``tiny`` sizes the check's own
    case stands in for the BraTS-size one, and its predict is the one evaluate is held against."""
    part = PartResult("inference", "4. Inference: predict (TTA on and off) and evaluate under 15 subsets")
    device = workspace.device
    # evaluate mirrors by default on CUDA only, as predict does.
    evaluate_tta = "--tta" if device.startswith("cuda") else "--no-tta"
    try:
        run_dir = workspace.train_checkpoint(deadline.left())
        val_case = _validation_case(workspace)
        val_folder = _case_folder(workspace.root / "raw" / DATASET, val_case)
        case, label = _brats_size_case(workspace) if workspace.sizes.predict_shape else (val_folder, val_case)
        seconds = {}
        for tta in ("--tta", "--no-tta"):
            seconds[tta] = _predict(workspace, run_dir, case, tta, deadline, f"predict{tta}")
            part.rows.append({"command": f"predict {tta}", "case": label, "seconds": seconds[tta]})
        one = seconds[evaluate_tta]
        if case != val_folder:
            one = _predict(workspace, run_dir, val_folder, evaluate_tta, deadline, "predict-val")
            part.rows.append({"command": f"predict {evaluate_tta} (full modalities)", "case": val_case, "seconds": one})
        cases_file = workspace.root / "evaluate_case.txt"
        cases_file.write_text(val_case + "\n")
        every = workspace.mmrobust("evaluate", "-m", str(run_dir), "--checkpoint", "latest", "--cases",
                                   str(cases_file), "--subsets", "all", "-o", str(workspace.root / "evaluation"),
                                   "-np", "0", "--device", device, timeout=deadline.left(), log="evaluate")
        part.rows.append({"command": "evaluate --subsets all (15)", "case": val_case, "seconds": every})
        part.notes.append(f"evaluate of 15 subsets / one full-modality predict {evaluate_tta} of the same case: "
                          f"{every / one:.2f}")
    except subprocess.TimeoutExpired as error:
        return _stopped(part, " ".join(str(a) for a in error.cmd[2:4]))
    except CheckStepError as error:
        part.status, part.reason = FAILED, str(error)
    return part


def _brats_size_case(workspace: Workspace) -> tuple[Path, str]:
    shape = workspace.sizes.predict_shape
    folder = workspace.root / "bratscase"
    if not folder.is_dir():
        workspace.mmrobust("make-synthetic", "-o", str(folder), "--cases", "1", "--seed", "7", "--shape",
                           ",".join(str(s) for s in shape), log="make-synthetic-bratscase")
    case = first_match((p for p in folder.iterdir() if p.is_dir()), f"case folder in {folder}")
    return case, "x".join(str(s) for s in shape)


def _predict(workspace: Workspace, run_dir: Path, case: Path, tta: str, deadline: Deadline, log: str) -> float:
    return workspace.mmrobust("predict", "-i", str(case), "-o", str(workspace.root / log), "-m", str(run_dir),
                              "--checkpoint", "latest", "--device", workspace.device, tta, "--overwrite",
                              timeout=deadline.left(), log=log)


def _validation_case(workspace: Workspace) -> str:
    return Splits.load(workspace.preprocessed / "splits.json").fold(0).val[0]


def distributed_part(workspace: Workspace, deadline: Deadline) -> PartResult:
    """``torchrun --nproc_per_node 1``: two training steps and one checkpoint through the process
    group (nccl on CUDA; on the CPU gloo runs the same path and nccl is recorded as skipped)."""
    part = PartResult("distributed", "5. torchrun, one process: two steps and a checkpoint")
    cuda = workspace.device.startswith("cuda")
    results = workspace.root / "results_torchrun"
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1", "-m",
            "mmseg_robust", "train", "-d", DATASET, "-c", "3d_fullres", "-f", "0", "--epochs", "1",
            "--iters-per-epoch", "2", "--val-patches-per-case", "1", "--num-workers", "0", "--device",
            workspace.device, "--results", str(results)]
    try:
        seconds = workspace.command(argv, deadline.left(), "torchrun")
    except subprocess.TimeoutExpired:
        return _stopped(part, "torchrun")
    except CheckStepError as error:
        part.status, part.reason = FAILED, str(error)
        return part
    checkpoints = sorted(p.name for p in results.rglob("checkpoint_latest.pt"))
    part.rows.append({"backend": "nccl" if cuda else "gloo", "steps": 2, "checkpoint_written": bool(checkpoints),
                      "seconds": seconds})
    if not cuda:
        part.notes.append("nccl: skipped (no CUDA device; gloo ran the same path)")
    if not checkpoints:
        part.status, part.reason = FAILED, "no checkpoint written"
    return part


def study_part(workspace: Workspace, deadline: Deadline) -> PartResult:
    """The first run of the robustness study's ``full`` budget (3D, the planner's own plan), as
    ``study_plan.train_command`` writes it, for a few iterations on the check's data."""
    part = PartResult("study", "6. Robustness study, full budget: its first run starts")
    sys.path.insert(0, str(ROBUSTNESS_STUDY))
    import study_plan

    budget = study_plan.BUDGETS["full"]
    first = study_plan.study_runs(workspace.root / "study", study_plan.select_methods(None, budget), budget)[0]
    args = study_plan.train_command(first, budget, DATASET)
    replaced = {"--epochs": "1", "--iters-per-epoch": str(workspace.sizes.study_iterations),
                "--val-patches-per-case": "1", "--device": workspace.device}
    args = [replaced.get(args[i - 1], value) if i else value for i, value in enumerate(args)]
    try:
        seconds = workspace.mmrobust(*args, timeout=deadline.left(), log="study-first-run")
    except subprocess.TimeoutExpired:
        return _stopped(part, f"the study's first run ({first.label})")
    except CheckStepError as error:
        part.status, part.reason = FAILED, str(error)
        return part
    part.rows.append({"run": first.label, "budget": budget.name, "configuration": budget.configuration,
                      "iterations": workspace.sizes.study_iterations, "seconds": seconds})
    if workspace.sizes.tiny:
        part.notes.append("tiny sizes: the check's toy plan stands in for the planner's 24 GB plan")
    return part
