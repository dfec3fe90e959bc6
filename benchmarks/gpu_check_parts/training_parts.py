"""The in-process parts: the environment, 3D training steps per precision and strategy (speed, peak
memory beside the planner's estimate, fp16 health under GMD), and ``torch.compile`` on and off.

A training row builds the run's own network, task, strategy and optimiser through the same API the
trainer uses, on patches of the check's preprocessed cases, and times the engine's
``train_steps`` after warm-up. Augmentation is off and the patches sit on the device already, so
a row measures the model's step, not the loader."""

from __future__ import annotations

import math
import platform
import time
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from mmseg_robust.planners.memory_model import (
    BYTES_PER_ELEMENT_AMP,
    BYTES_PER_ELEMENT_FP32,
    estimate_training_memory_bytes,
    topology_for,
)
from mmseg_robust.planners.plans import ConfigurationPlan, Plans

from mmseg_robust.data.splits import Splits
from mmseg_robust.engine.epochs import make_optimizer, make_strategy
from mmseg_robust.engine.loop import train_steps
from mmseg_robust.networks import build_network
from mmseg_robust.precision import PrecisionError, make_precision
from mmseg_robust.runs.config import TrainingConfig
from mmseg_robust.segmentation_task import SegmentationTask
from mmseg_robust.training.data_loading import LoaderSettings, make_training_loader

from .report import PARTIAL, PartResult
from .workspace import DATASET, CheckSizes, Deadline, Workspace

GIB = 1024**3
#: (--amp, row label, strategy, --subsets), in the order they run: what the check must answer first
#: (every precision under plain, fp16 under GMD: is its loss scale healthy?), then the rest, then
#: GMD over all 15 subsets if time allows (not at toy sizes).
TRAINING_ROWS = (("off", "plain", "plain", "all"), ("bf16", "plain", "plain", "all"), ("fp16", "plain", "plain", "all"),
                 ("fp16", "gmd k=5", "gmd", "k=5"), ("bf16", "gmd k=5", "gmd", "k=5"), ("off", "gmd k=5", "gmd", "k=5"),
                 ("bf16", "cggm", "cggm", "all"), ("fp16", "cggm", "cggm", "all"), ("off", "cggm", "cggm", "all"))
OPTIONAL_ROWS = (("bf16", "gmd all 15", "gmd", "all"),)
#: The trainer's defaults (TrainingConfig): SGD with Nesterov momentum, clip 12.
GRAD_CLIP = TrainingConfig.grad_clip


def environment_part(device: torch.device) -> PartResult:
    part = PartResult("environment", "1. Environment")
    row: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                           "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version()}
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        row.update(device=properties.name, memory_gib=properties.total_memory / GIB,
                   bf16=torch.cuda.is_bf16_supported())
    else:
        row.update(device=platform.processor() or platform.machine(), memory_gib=None, bf16="CPU autocast")
    part.rows.append(row)
    return part


@dataclass
class TrainingSetup:
    """The plan and fixed device batches every training row uses."""

    plans: Plans
    plan: ConfigurationPlan
    batches: list[dict[str, Any]]

    @classmethod
    def load(cls, workspace: Workspace, device: torch.device, n_batches: int = 2) -> "TrainingSetup":
        plans = Plans.load(workspace.preprocessed / "plans.json")
        plan = plans.configuration("3d_fullres")
        fold = Splits.load(workspace.preprocessed / "splits.json").fold(0)
        folders = [workspace.preprocessed / plan.data_identifier / case for case in fold.train]
        settings = LoaderSettings(plan.patch_size, plan.batch_size, plans.modalities, augment=False)
        loader = make_training_loader(folders, settings, num_workers=0, pin_memory=False)
        batches = [{k: v.to(device) if torch.is_tensor(v) else v for k, v in next(loader).items()}
                   for _ in range(n_batches)]
        return cls(plans, plan, batches)


def planner_estimate_gib(plan: ConfigurationPlan, n_modalities: int, half_precision: bool) -> float:
    """The planner's memory model for this row's precision, without the CUDA context (which
    ``max_memory_allocated`` does not count): what the measured peak is held against."""
    topology = topology_for(plan.patch_size, plan.features_per_stage, plan.strides, plan.kernel_sizes,
                            plan.n_conv_per_stage)
    bytes_per_element = BYTES_PER_ELEMENT_AMP if half_precision else BYTES_PER_ELEMENT_FP32
    return estimate_training_memory_bytes(topology, plan.batch_size, n_modalities, bytes_per_element,
                                          include_cuda_context=False) / GIB


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_steps(setup: TrainingSetup, device: torch.device, amp: str, strategy: str, subsets: str,
                  sizes: CheckSizes, compile_backend: str | None = None) -> dict[str, Any]:
    """One row: iterations per second over the timed steps after warm-up, peak memory, and the
    health of the losses and of fp16's loss scale step by step."""
    torch.manual_seed(0)
    precision = make_precision(amp, device)
    config = TrainingConfig(dataset=DATASET, configuration="3d_fullres", fold=0, strategy=strategy, subsets=subsets)
    model = build_network("ds", setup.plan, setup.plans.modalities, deep_supervision=True,
                          fusion=config.fusion).to(device)
    factory = partial(make_optimizer, config.optimizer, weight_decay=config.weight_decay, momentum=config.momentum)
    optimizer = factory(model.parameters(), config.learning_rate)
    runner = make_strategy(config, SegmentationTask(), model, device, factory, config.learning_rate)
    compile_seconds = None
    if compile_backend is not None:
        started = time.perf_counter()
        model.compile_blocks(backend=compile_backend)
    losses, skipped, step = [], 0, 0

    def run(count: int) -> None:
        nonlocal skipped, step
        for _ in range(count):
            scale = precision.loss_scale
            batch = setup.batches[step % len(setup.batches)]
            done = train_steps(model, optimizer, runner, precision, [batch], 0, step, GRAD_CLIP, progress=False)
            losses.extend(done.losses)
            skipped += precision.scaler is not None and precision.loss_scale < scale
            step += 1

    run(sizes.warmup_steps)
    _synchronize(device)
    if compile_backend is not None:
        compile_seconds = time.perf_counter() - started
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    run(sizes.timed_steps)
    _synchronize(device)
    seconds = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated(device) / GIB if device.type == "cuda" else None
    estimate = planner_estimate_gib(setup.plan, len(setup.plans.modalities), precision.dtype is not None)
    row = {"precision": precision.name, "strategy": strategy, "subsets": subsets,
           "it_per_s": sizes.timed_steps / seconds, "peak_gib": peak, "planner_estimate_gib": estimate,
           "peak_over_estimate": peak / estimate if peak is not None and estimate else None,
           "losses_finite": all(math.isfinite(v) for v in losses),
           "loss_scale": precision.loss_scale if precision.scaler is not None else None,
           "inf_steps_skipped": skipped if precision.scaler is not None else None}
    if compile_seconds is not None:
        row["compile_s"] = compile_seconds
    return row


def _precision_unavailable(amp: str, device: torch.device) -> str | None:
    try:
        make_precision(amp, device)
    except PrecisionError as error:
        return str(error)
    if amp == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return "this GPU has no bf16"
    return None


def training_part(workspace: Workspace, setup: TrainingSetup, device: torch.device, deadline: Deadline) -> PartResult:
    part = PartResult("training", "2. 3D training: it/s and peak memory per precision and strategy")
    plan = setup.plan
    if device.type != "cuda":
        part.notes.append("peak memory is measured on CUDA only (torch.cuda.max_memory_allocated)")
    part.notes.append("planner_estimate_gib: the planner's memory model at the row's precision without the CUDA "
                      "context; it is tested to lie within 2x of a measured CPU peak")
    part.notes.append(f"plan 3d_fullres: patch {list(plan.patch_size)}, batch {plan.batch_size}, features "
                      f"{list(plan.features_per_stage)}, the plan's estimate (mixed precision, CUDA context "
                      f"included) {plan.estimated_memory_gb} GiB")
    rows = TRAINING_ROWS + (() if workspace.sizes.tiny else OPTIONAL_ROWS)
    last = 0.0
    for amp, label, strategy, subsets in rows:
        # A row starts only when the time left covers the last row's: rows cannot be interrupted.
        if deadline.left() <= last:
            part.status, part.reason = PARTIAL, f"{label} under {amp} and what follows did not run"
            break
        unavailable = _precision_unavailable(amp, device)
        if unavailable:
            part.rows.append({"precision": amp, "strategy": label, "subsets": subsets, "skipped": unavailable})
            continue
        started = time.perf_counter()
        try:
            part.rows.append({**measure_steps(setup, device, amp, strategy, subsets, workspace.sizes),
                              "strategy": label})
        except torch.OutOfMemoryError as error:
            # A finding, not the end of the part: the next rows may fit.
            part.rows.append({"precision": amp, "strategy": label, "subsets": subsets,
                              "skipped": f"out of memory: {str(error).splitlines()[0]}"})
            torch.cuda.empty_cache()
        last = time.perf_counter() - started
    fp16_gmd = [r for r in part.rows if r.get("precision") == "fp16" and r["strategy"].startswith("gmd")
                and "it_per_s" in r]
    for row in fp16_gmd:
        healthy = row["losses_finite"] and row["loss_scale"] > 1
        part.notes.append(f"fp16 + {row['strategy']}: losses finite {row['losses_finite']}, loss scale "
                          f"{row['loss_scale']:g} ({'above 1' if row['loss_scale'] > 1 else 'NOT above 1'}), "
                          f"{row['inf_steps_skipped']} inf step(s) skipped: {'healthy' if healthy else 'CHECK'}")
    return part


def compile_part(setup: TrainingSetup, device: torch.device, sizes: CheckSizes, deadline: Deadline) -> PartResult:
    part = PartResult("compile", f"3. torch.compile ({sizes.compile_backend}) on and off, plain")
    amp = "auto"
    last = 0.0
    for backend in (None, sizes.compile_backend):
        if deadline.left() <= last:
            part.status, part.reason = PARTIAL, f"the {'compiled' if backend else 'eager'} row did not run"
            break
        started = time.perf_counter()
        row = measure_steps(setup, device, amp, "plain", "all", sizes, compile_backend=backend)
        last = time.perf_counter() - started
        part.rows.append({"compile": backend or "off", "precision": row["precision"], "it_per_s": row["it_per_s"],
                          "compile_s": row.get("compile_s"), "peak_gib": row["peak_gib"]})
    if len(part.rows) == 2:
        ratio = part.rows[1]["it_per_s"] / part.rows[0]["it_per_s"]
        part.notes.append(f"it/s compiled over not compiled: {ratio:.2f}; compile_s is the compile and the warm-up")
    return part
