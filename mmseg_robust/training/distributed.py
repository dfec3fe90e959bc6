"""Multi-process training under ``torchrun`` (nccl on GPU, gloo on CPU).

Gradients are averaged with one all-reduce of a flat buffer after the strategy's backward,
instead of wrapping the model in DistributedDataParallel: the strategies call model methods
other than ``forward`` (``subset_logits``) and GMD needs the per-subset gradients of all ranks,
which DDP's backward hooks would reduce at the wrong moment. The result is the same average.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

from mmseg_robust.errors import MMRobustError


class DistributedError(MMRobustError):
    """Ranks that disagree (parameters diverged)."""


@dataclass(frozen=True)
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_type: str) -> DistributedContext:
    """Join the process group torchrun describes in the environment; single process otherwise."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedContext()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return DistributedContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def broadcast_parameters(model: nn.Module, context: DistributedContext) -> None:
    """Start every rank from rank 0's weights."""
    if context.enabled:
        for tensor in list(model.parameters()) + list(model.buffers()):
            dist.broadcast(tensor.data, src=0)


def average_gradients(model: nn.Module, context: DistributedContext) -> None:
    """All-reduce the mean gradient; a parameter without gradient on a rank contributes zeros, and
    every rank ends with the same gradient tensor for every parameter."""
    if not context.enabled:
        return
    params = [p for p in model.parameters() if p.requires_grad]
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = _flatten_dense_tensors(grads)
    dist.all_reduce(flat)
    flat /= context.world_size
    for param, reduced in zip(params, _unflatten_dense_tensors(flat, grads)):
        param.grad = reduced


def check_in_sync(model: nn.Module, context: DistributedContext) -> bool:
    """Compare a per-tensor checksum of the parameters across ranks; raise if they diverged."""
    if not context.enabled:
        return True
    checksum = torch.stack([p.detach().double().sum() for p in model.parameters()]
                           + [p.detach().double().pow(2).sum() for p in model.parameters()])
    gathered = [torch.zeros_like(checksum) for _ in range(context.world_size)]
    dist.all_gather(gathered, checksum)
    if not all(torch.equal(gathered[0], g) for g in gathered[1:]):
        raise DistributedError(f"rank {context.rank}: parameters differ between ranks")
    return True


def shutdown(context: DistributedContext) -> None:
    if context.enabled and dist.is_initialized():
        dist.destroy_process_group()
