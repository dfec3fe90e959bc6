"""DS U-Net: batched branches (one tensor) vs a per-modality loop (one graph per modality), on CPU.

Run: .venv/bin/python benchmarks/bench_ds_forward.py [--repeats 3] [--threads 2] [--gmd none|2d|all]
     [--only 3d|2d] [--malloc default|no-mmap]

For each configuration prints the median seconds of
  * fwd+bwd: forward_branches, the mean of the 15 subset losses (the ``plain`` strategy), one backward;
  * gmd-full: forward_branches, then one backward per subset (``autograd.grad`` with retain_graph),
    what ``--gmd-scope full`` costs (docs/design.md §6.2): the batched graph runs every row in each of the 15
    backwards, the per-modality graphs only the subset's branches;
and the ratio loop / batched (> 1: batched is faster). The two paths alternate within every repeat
so that load from other processes hits both alike.

``--malloc no-mmap`` applies what the trainer does on the CPU
(``mmseg_robust.training.cpu_allocator``: glibc M_MMAP_MAX 0, no trimming) before anything is
allocated: glibc serves every allocation above 32 MiB with a fresh mmap and returns it on free,
so each large activation costs page faults (kernel time) on every step; the batched path's
activations are M times larger than the loop's, so it pays more of that on CPU.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time

import torch
from mmseg_robust.planners.plans import ConfigurationPlan

from mmseg_robust.networks import DynamicSharingUNet, build_network
from mmseg_robust.training.cpu_allocator import keep_allocations_on_heap

MODALITIES = ("flair", "t1", "t1ce", "t2")
SUBSETS = [list(s) for k in range(1, 5) for s in itertools.combinations(range(4), k)]

CONFIGS = {
    "3d": (ConfigurationPlan(name="3d_fullres", spatial_dims=3, patch_size=(64, 64, 64), batch_size=2,
                             features_per_stage=(32, 64, 128, 256), kernel_sizes=((3, 3, 3),) * 4,
                             strides=((1, 1, 1),) + ((2, 2, 2),) * 3, data_identifier="bench",
                             estimated_memory_gb=0.0), 2),
    "2d": (ConfigurationPlan(name="2d", spatial_dims=2, patch_size=(128, 128), batch_size=8,
                             features_per_stage=(32, 64, 128, 256, 512), kernel_sizes=((3, 3),) * 5,
                             strides=((1, 1),) + ((2, 2),) * 4, data_identifier="bench",
                             estimated_memory_gb=0.0), 8),
}


def subset_loss(net: DynamicSharingUNet, logits: torch.Tensor, available: torch.Tensor, subset) -> torch.Tensor:
    fused, valid = net.fuse(logits, available, subset)
    return fused[valid].sigmoid().mean()


def fwd_bwd(net: DynamicSharingUNet, images, available, batched: bool) -> None:
    out = net.forward_branches(images, available, batched=batched)
    loss = sum(subset_loss(net, out.logits[0], available, s) for s in SUBSETS) / len(SUBSETS)
    loss.backward()


def gmd_full(net: DynamicSharingUNet, images, available, batched: bool) -> None:
    out = net.forward_branches(images, available, batched=batched)
    params = [p for p in net.parameters()]
    for i, subset in enumerate(SUBSETS):
        loss = subset_loss(net, out.logits[0], available, subset)
        torch.autograd.grad(loss, params, retain_graph=i < len(SUBSETS) - 1, allow_unused=True)


def timed_pair(fns: dict, repeats: int) -> dict:
    """Median seconds of each function; one warm-up each, then the functions alternate."""
    for fn in fns.values():
        fn()  # warm-up: allocator, oneDNN primitives
    times: dict = {key: [] for key in fns}
    for r in range(repeats):
        for key in (list(fns) if r % 2 == 0 else list(fns)[::-1]):
            start = time.perf_counter()
            fns[key]()
            times[key].append(time.perf_counter() - start)
    return {key: statistics.median(values) for key, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--gmd", choices=("none", "2d", "all"), default="2d",
                        help="configurations that also get the 15-backward gmd-full rows (slow in 3D)")
    parser.add_argument("--only", choices=sorted(CONFIGS))
    parser.add_argument("--malloc", choices=("default", "no-mmap"), default="default")
    args = parser.parse_args()
    if args.malloc == "no-mmap":
        if not keep_allocations_on_heap():
            raise SystemExit("glibc mallopt refused or missing")
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, CPU, {torch.get_num_threads()} threads, malloc {args.malloc}, median of "
          f"{args.repeats} (after 1 warm-up), all 4 modalities available")
    print(f"{'config':<40} {'workload':<9} {'batched s':>10} {'loop s':>10} {'loop/batched':>13}")
    for key, (config, batch) in CONFIGS.items():
        if args.only and key != args.only:
            continue
        torch.manual_seed(0)
        net = build_network("ds", config, MODALITIES)
        images = torch.randn((batch, len(MODALITIES)) + tuple(config.patch_size))
        available = torch.ones(batch, len(MODALITIES), dtype=torch.bool)
        label = f"{key} {'x'.join(map(str, config.patch_size))} F{config.features_per_stage} B{batch}"
        workloads = {"fwd+bwd": fwd_bwd}
        if args.gmd == "all" or args.gmd == key:
            workloads["gmd-full"] = gmd_full
        for name, workload in workloads.items():
            def run(batched, workload=workload):
                net.zero_grad(set_to_none=True)
                workload(net, images, available, batched)
            seconds = timed_pair({True: lambda: run(True), False: lambda: run(False)}, args.repeats)
            print(f"{label:<40} {name:<9} {seconds[True]:>10.2f} {seconds[False]:>10.2f} "
                  f"{seconds[False] / seconds[True]:>13.2f}", flush=True)


if __name__ == "__main__":
    main()
