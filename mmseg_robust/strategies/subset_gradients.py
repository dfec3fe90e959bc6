"""Per-subset gradients as the rows of one float32 ``(k, P)`` buffer (DESIGN.md §6.2).

Which parameters a subset reaches comes from the network's explicit parameter -> modality map
(``parameter_modalities``), never from ``grad is None``: the stems and norms of a modality outside
the subset get an exact zero in that row, and autograd is not even asked for them.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.distributed as dist
from torch import Tensor, nn

SHARED = "shared"


class SubsetGradientBuffer:
    """Rows of per-subset gradients over a fixed list of trainable parameters of ``model``.

    ``names`` restricts the buffer to those parameters (``--gmd-scope head``); default: every
    trainable parameter. Rows are stored unscaled (divided by the AMP loss scale) in float32.
    """

    def __init__(self, model: nn.Module, k: int, names: Sequence[str] | None = None) -> None:
        owners = model.parameter_modalities()
        wanted = set(names) if names is not None else None
        self.names: list[str] = []
        self.params: list[nn.Parameter] = []
        for name, param in model.named_parameters():
            if param.requires_grad and (wanted is None or name in wanted):
                self.names.append(name)
                self.params.append(param)
        if not self.params:
            raise ValueError("no trainable parameters to collect gradients for")
        self.owners = [owners[name] for name in self.names]
        self.modalities: tuple[str, ...] = tuple(model.modalities)
        self.sizes = [p.numel() for p in self.params]
        self.buffer = torch.zeros((k, sum(self.sizes)), dtype=torch.float32, device=self.params[0].device)

    @property
    def k(self) -> int:
        return self.buffer.shape[0]

    def _row_views(self, row: int) -> list[Tensor]:
        return [v.view_as(p) for v, p in zip(self.buffer[row].split(self.sizes), self.params)]

    def reached(self, subset: Sequence[int]) -> list[bool]:
        """Per parameter: is it shared or owned by a modality in ``subset``?"""
        members = {self.modalities[m] for m in subset}
        return [owner == SHARED or owner in members for owner in self.owners]

    def fill(self, row: int, loss: Tensor, subset: Sequence[int], loss_scale: float = 1.0,
             retain_graph: bool = True) -> None:
        """Row ``row`` <- d(loss)/d(params) / loss_scale; exactly zero for parameters ``subset``
        does not reach. ``loss`` is the (already AMP-scaled) subset loss."""
        reached = self.reached(subset)
        targets = [p for p, r in zip(self.params, reached) if r]
        grads = torch.autograd.grad(loss, targets, retain_graph=retain_graph, allow_unused=True,
                                    materialize_grads=True)
        views = self._row_views(row)
        for view, is_reached in zip(views, reached):
            if not is_reached:
                view.zero_()
        reached_views = [v for v, r in zip(views, reached) if r]
        torch._foreach_copy_(reached_views, [g.to(torch.float32) for g in grads])
        if loss_scale != 1.0:
            self.buffer[row].mul_(1.0 / loss_scale)

    def add_to_every_row(self, gradients: Sequence[Tensor]) -> None:
        """Add one gradient (per parameter, unscaled) to every row: a loss term shared by all subsets."""
        flat = torch.cat([g.reshape(-1).to(torch.float32) for g in gradients])
        self.buffer.add_(flat)

    def all_reduce_mean(self, world_size: int) -> None:
        """Average the rows across ranks so that every rank resolves the same conflicts."""
        if world_size > 1:
            dist.all_reduce(self.buffer)
            self.buffer.div_(world_size)

    def gram(self) -> Tensor:
        """``G_ij = g_i . g_j``: one (k, P) x (P, k) product in float32."""
        return self.buffer @ self.buffer.T

    def combine_into_grad(self, weights: Tensor, loss_scale: float = 1.0) -> None:
        """``p.grad <- loss_scale * sum_l weights_l g_l`` for every parameter of the buffer (the
        trainer unscales ``.grad`` before clipping, as for any other strategy)."""
        w = weights.to(self.buffer.device, torch.float32)
        if loss_scale != 1.0:
            w = w * loss_scale
        flat = w @ self.buffer
        for param, view in zip(self.params, flat.split(self.sizes)):
            param.grad = view.view_as(param).to(param.dtype)

    def row_gradients(self, row: int) -> dict[str, Tensor]:
        """Row ``row`` per parameter name (copies; for tests and inspection)."""
        return {name: view.clone() for name, view in zip(self.names, self._row_views(row))}
