"""Per-subset gradients as the rows of one float32 ``(k, P)`` buffer (docs/design.md §6.2).

Which parameters a subset reaches comes from the model's explicit parameter -> modality map
(``parameter_modalities``), never from ``grad is None``: the stems and norms of a modality outside
the subset get an exact zero in that row, and autograd is not even asked for them.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.distributed as dist
from torch import Tensor, nn

from mmseg_robust.multimodal.protocol import SHARED, MultimodalModel


class SubsetGradientBuffer:
    """Rows of per-subset gradients over a fixed list of trainable parameters of ``model``.

    ``names`` restricts the buffer to those parameters (``--gmd-scope head``); default: every
    trainable parameter. Rows are stored unscaled (divided by the AMP loss scale) in float32.
    """

    def __init__(self, model: MultimodalModel, k: int, names: Sequence[str] | None = None) -> None:
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

    def flatten(self, gradients: Sequence[Tensor]) -> Tensor:
        """One gradient per parameter of the buffer as a float32 ``P`` vector (a shared loss term's)."""
        return torch.cat([g.reshape(-1).to(torch.float32) for g in gradients])

    def all_reduce_mean(self, world_size: int, shared: Tensor | None = None) -> None:
        """Average the rows (and ``shared``) across ranks so that every rank resolves the same conflicts."""
        if world_size > 1:
            for tensor in (self.buffer, shared):
                if tensor is not None:
                    dist.all_reduce(tensor)
                    tensor.div_(world_size)

    def gram(self) -> Tensor:
        """``G_ij = g_i . g_j``: one (k, P) x (P, k) product in float32."""
        return self.buffer @ self.buffer.T

    def gram_with_shared(self, gram: Tensor, shared: Tensor) -> Tensor:
        """The Gram matrix of the rows ``g_i + shared`` without forming them:
        ``G + b 1^T + 1 b^T + |shared|^2`` with ``b = buffer @ shared``."""
        projections = self.buffer @ shared
        return gram + projections[:, None] + projections[None, :] + shared @ shared

    def combine_into_grad(self, weights: Tensor, loss_scale: float = 1.0, shared: Tensor | None = None,
                          shared_weight: float = 1.0) -> None:
        """``p.grad <- loss_scale * (sum_l weights_l g_l + shared_weight * shared)`` for every
        parameter of the buffer (the trainer unscales ``.grad`` before clipping, as for any other
        strategy)."""
        w = weights.to(self.buffer.device, torch.float32)
        flat = w @ self.buffer
        if shared is not None:
            flat.add_(shared, alpha=shared_weight)
        if loss_scale != 1.0:
            flat.mul_(loss_scale)
        for param, view in zip(self.params, flat.split(self.sizes)):
            param.grad = view.view_as(param).to(param.dtype)

    def row_gradients(self, row: int) -> dict[str, Tensor]:
        """Row ``row`` per parameter name (copies; for tests and inspection)."""
        return {name: view.clone() for name, view in zip(self.names, self._row_views(row))}
