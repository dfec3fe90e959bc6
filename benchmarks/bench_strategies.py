"""Step time and peak memory of every gradient strategy, as ratios to ``plain`` (docs/design.md §12).

Run: .venv/bin/python benchmarks/bench_strategies.py [--only 3d|2d] [--steps 5] [--threads 2]

Each row runs in its own process (so that peak memory is its own): build the demo-sized DS U-Net,
one warm-up step, then the mean of ``--steps`` timed steps of ``strategy.backward`` on the same fixed batch
(all four modalities, every subset). Peak memory is the growth of the process's peak RSS over its
size after the warm-up's inputs were built (CPU) or ``torch.cuda.max_memory_allocated`` (CUDA).

``floor (exact GMD)`` is what exact GMD cannot go below: one forward with per-modality graphs and
one backward per subset through its own branches (``autograd.grad`` with the graph retained),
timed without anything else (no gradient buffer, Gram matrix or combination).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch
from mmseg_robust.planners.plans import ConfigurationPlan

from mmseg_robust.data.modality_subsets import nonempty_subsets
from mmseg_robust.networks import build_network
from mmseg_robust.precision import make_precision
from mmseg_robust.segmentation_task import SegmentationTask
from mmseg_robust.strategies import CGGMSettings, StrategyEnvironment, SubsetSampler, build_strategy
from mmseg_robust.strategies.base import fused_subset_losses
from mmseg_robust.training.cpu_allocator import keep_allocations_on_heap

MODALITIES = ("flair", "t1", "t1ce", "t2")
#: The demo's CPU-sized plans (Makefile): base features 8.
CONFIGS = {
    "3d": ConfigurationPlan(name="3d_fullres", spatial_dims=3, patch_size=(48, 48, 48), batch_size=2,
                            features_per_stage=(8, 16, 32, 64), kernel_sizes=((3, 3, 3),) * 4,
                            strides=((1, 1, 1),) + ((2, 2, 2),) * 3, data_identifier="bench",
                            estimated_memory_gb=0.0),
    "2d": ConfigurationPlan(name="2d", spatial_dims=2, patch_size=(128, 128), batch_size=8,
                            features_per_stage=(16, 32, 64, 128, 256), kernel_sizes=((3, 3),) * 5,
                            strides=((1, 1),) + ((2, 2),) * 4, data_identifier="bench", estimated_memory_gb=0.0),
}
#: (row label, strategy, --subsets, --gmd-scope); "floor" is the exact-GMD floor.
ROWS = [
    ("plain (all)", "plain", "all", "full"),
    ("floor (exact GMD, all)", "floor", "all", "full"),
    ("gmd all, full", "gmd", "all", "full"),
    ("gmd k=5, full", "gmd", "k=5", "full"),
    ("gmd all, head", "gmd", "all", "head"),
    ("gmd all, output", "gmd", "all", "output"),
    ("cggm", "cggm", "all", "full"),
    ("gmd+cggm all, full", "gmd+cggm", "all", "full"),
    ("gmd+cggm all, head", "gmd+cggm", "all", "head"),
    ("gmd+cggm all, output", "gmd+cggm", "all", "output"),
]


def make_batch(plan: ConfigurationPlan, device: torch.device) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    shape = (plan.batch_size, len(MODALITIES)) + tuple(plan.patch_size)
    target = torch.rand((plan.batch_size, 3) + tuple(plan.patch_size), generator=generator) > 0.8
    return {"inputs": torch.randn(shape, generator=generator).to(device),
            "available": torch.ones(shape[:2], dtype=torch.bool, device=device),
            "target": target.float().to(device)}


def floor_step(model, batch, subsets, task) -> None:
    """One forward with per-modality graphs, then one backward per subset, nothing else."""
    branches = model.forward_branches(batch["inputs"], batch["available"], batched=False)
    losses = fused_subset_losses(model, branches.logits, batch["available"], batch["target"], subsets, task)
    params = [p for p in model.parameters() if p.requires_grad]
    for i, value in enumerate(losses):
        torch.autograd.grad(value, params, retain_graph=i < len(losses) - 1, allow_unused=True)


def peak_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure(config: str, strategy_name: str, subsets: str, scope: str, steps: int, device: torch.device,
            amp: str) -> dict:
    torch.manual_seed(0)
    plan = CONFIGS[config]
    model = build_network("ds", plan, MODALITIES, deep_supervision=True).to(device)
    precision = make_precision(amp, device)
    batch = make_batch(plan, device)
    sampler = SubsetSampler(subsets, MODALITIES, seed=0)
    strategy = build_strategy("plain" if strategy_name == "floor" else strategy_name, sampler, SegmentationTask(),
                              gmd_scope=scope, cggm=CGGMSettings())
    strategy.prepare(model, StrategyEnvironment(device))
    all_subsets = nonempty_subsets(range(len(MODALITIES)))

    def step(index: int) -> None:
        model.zero_grad(set_to_none=True)
        if strategy_name == "floor":
            with precision.autocast():
                floor_step(model, batch, all_subsets, strategy.task)
        else:
            strategy.backward(model, batch, index, precision)
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    baseline = peak_bytes(device) if device.type == "cpu" else torch.cuda.memory_allocated(device)
    step(0)  # warm-up
    times = []
    for index in range(1, steps + 1):
        start = time.perf_counter()
        step(index)
        times.append(time.perf_counter() - start)
    # The mean, not the median: with k=N the subsets (and so the cost) change from step to step.
    return {"seconds": statistics.mean(times), "peak_mb": (peak_bytes(device) - baseline) / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(CONFIGS))
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", default="off", help="off | bf16 | fp16 (fp16 needs CUDA)")
    parser.add_argument("--rows", help="comma-separated row numbers to run (0 = plain, always run)")
    parser.add_argument("--row", help=argparse.SUPPRESS)  # internal: measure one row, print JSON
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    if device.type == "cpu":
        keep_allocations_on_heap()  # what the trainer does on the CPU
    if args.row:
        config, index = args.row.split(":")
        _, name, subsets, scope = ROWS[int(index)]
        print(json.dumps(measure(config, name, subsets, scope, args.steps, device, args.amp)))
        return
    print(f"torch {torch.__version__}, {device}, {torch.get_num_threads()} threads, amp {args.amp}, "
          f"mean of {args.steps} steps after 1 warm-up, each row in its own process")
    for config in [args.only] if args.only else sorted(CONFIGS):
        plan = CONFIGS[config]
        print(f"\n{config}: patch {plan.patch_size}, batch {plan.batch_size}, features {plan.features_per_stage}, "
              f"4 modalities, deep supervision\n")
        print("| strategy | s / step | x plain | peak MB | x plain |")
        print("| --- | --- | --- | --- | --- |")
        base = None
        wanted = {0} | {int(r) for r in args.rows.split(",")} if args.rows else set(range(len(ROWS)))
        for index, (label, *_rest) in enumerate(ROWS):
            if index not in wanted:
                continue
            command = [sys.executable, __file__, "--row", f"{config}:{index}", "--steps", str(args.steps),
                       "--threads", str(args.threads), "--device", args.device, "--amp", args.amp]
            result = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
            base = base or result
            print(f"| {label} | {result['seconds']:.3f} | {result['seconds'] / base['seconds']:.2f} | "
                  f"{result['peak_mb']:.0f} | {result['peak_mb'] / max(base['peak_mb'], 1e-9):.2f} |", flush=True)


if __name__ == "__main__":
    main()
