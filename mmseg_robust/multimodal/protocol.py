"""What a multimodal model and its task offer the gradient strategies (docs/design.md §6), so that
``plain``, ``gmd``, ``cggm`` and ``gmd+cggm`` run unchanged on any model that offers it: the DS
U-Net of :mod:`mmseg_robust.networks`, or a sequence model of another pipeline.

A model has a set of ``modalities``; a subset of them is a tuple of their indices. With
per-modality **branches** (``has_branches``), branch ``m`` reads modality ``m`` alone and the
model's output for a subset is the fusion of its branches' outputs. Without branches (early
fusion: one network on all inputs) the strategies can only run ``plain``, which then trains with
random modality dropout.

A batch, as the strategies see it (:class:`MultimodalBatch`): ``inputs`` go to the model as they
are (a stacked image tensor, or per-modality sequences of different widths), ``available`` says
which modalities each sample has, ``target`` goes to the task only. The task
(:class:`MultimodalTask`) owns everything that knows what the outputs mean: the loss, CGGM's head
loss and utilisation metric, and the names of subsets in logs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Protocol, Sequence, TypedDict, Union

import torch
from torch import Tensor, nn

#: Owner of a parameter that every modality's branch uses (``parameter_modalities``).
SHARED = "shared"

#: Which modality the rows of a tensor belong to: one index for all rows, or one per row (a
#: branch model runs the rows of several modalities through shared layers in one batch).
RowModality = Union[int, Tensor, None]


class MultimodalBatch(TypedDict):
    """One training batch: ``inputs`` (opaque to the strategies), ``available`` ``(B, M)`` bool,
    ``target`` (opaque to the strategies, read by the task)."""

    inputs: Any
    available: Tensor
    target: Any


@dataclass
class BranchOutput:
    """What a branch model's ``forward_branches`` returns.

    ``logits[k]``: the raw outputs (segmentation logits, regression predictions) of every branch at
    output scale ``k`` (0: the model's output; deep supervision adds coarser ones), shape
    ``(B, M, ...)`` with the modality on axis 1; entries of unavailable (sample, modality) pairs
    are exactly 0 and were never computed. ``available``: ``(B, M)`` bool as given. ``features``:
    ``(B, M, ...)`` the features each branch's output layer reads (CGGM's heads train on them),
    only when asked for, zeros for unavailable pairs. ``gate_channels``: the last channels of each
    branch's outputs on axis 2 that are the fusion's gate weights, not predictions (a gated fusion;
    ``fuse`` takes them, :meth:`predictions` leaves them out).
    """

    logits: list[Tensor]
    available: Tensor
    features: Tensor | None = None
    gate_channels: int = 0

    def predictions(self, scale: int = 0) -> Tensor:
        """Every branch's own outputs at ``scale`` without gate channels: what a branch's own loss reads."""
        outputs = self.logits[scale]
        return outputs[:, :, :outputs.shape[2] - self.gate_channels] if self.gate_channels else outputs


class ClassifierHeads(Protocol):
    """CGGM's light per-modality heads (an ``nn.Module``, built by the model): head ``m`` maps
    branch ``m``'s detached features to an output of the task's kind through an output layer shaped
    like the model's own ``output_layer``."""

    def __call__(self, features: Tensor, modality: int) -> Tensor: ...

    def output_weight(self, modality: int) -> nn.Parameter:
        """The weight of head ``modality``'s output layer (CGGM's ``W_fm``)."""
        ...

    def parameters(self) -> Iterator[nn.Parameter]: ...


class MultimodalModel(Protocol):
    """The protocol a model offers the strategies (an ``nn.Module``).

    Every model: ``modalities``, ``has_branches``, ``subset_logits`` and ``parameter_modalities``.
    A model with ``has_branches`` also offers ``forward_branches``, ``fuse``, ``output_layer``,
    ``head_parameter_names``, ``output_parameter_names`` and ``make_classifier_heads``.
    """

    modalities: tuple[str, ...]
    has_branches: bool

    def subset_logits(self, inputs: Any, available: Tensor, subsets: Sequence[Sequence[int]]
                      ) -> list[tuple[list[Tensor], Tensor]]:
        """Per subset: (fused outputs per scale ``(B, ...)``, valid ``(B,)``: the sample has a
        modality of the subset)."""
        ...

    def parameter_modalities(self) -> dict[str, str]:
        """Every named parameter -> the modality that alone uses it, or :data:`SHARED`."""
        ...

    def named_parameters(self) -> Iterator[tuple[str, nn.Parameter]]: ...

    def parameters(self) -> Iterator[nn.Parameter]: ...

    def forward_branches(self, inputs: Any, available: Tensor, batched: bool | None = None,
                         return_features: bool = False) -> BranchOutput:
        """Run the branch of every available (sample, modality) pair. ``batched=False`` asks for one
        autograd graph per modality, so that a backward through a subset's loss runs only that
        subset's branches (exact GMD); None lets the model choose."""
        ...

    def fuse(self, branch_logits: Tensor, available: Tensor, subset: Sequence[int]) -> tuple[Tensor, Tensor]:
        """The fusion of one scale's branch outputs over ``subset`` ∩ available: ``(fused, valid)``."""
        ...

    @property
    def output_layer(self) -> nn.Module:
        """The layer every branch's output passes through last (CGGM's ``W_F``; has ``weight``)."""
        ...

    def head_parameter_names(self) -> list[str]:
        """The parameters of the last stage before the output and of the output layers:
        ``gmd_scope="head"``."""
        ...

    def output_parameter_names(self) -> list[str]:
        """The parameters of the output layers and the fusion only: ``gmd_scope="output"``."""
        ...

    def make_classifier_heads(self) -> ClassifierHeads:
        """A fresh set of CGGM heads, one per modality, for this model's features."""
        ...


class MultimodalTask(Protocol):
    """What the task supplies to the strategies. ``rows`` ``(B,)`` bool: which samples of the
    batch an output holds (a head runs only on the samples that have its modality)."""

    def loss(self, outputs: Sequence[Tensor], target: Any, valid: Tensor | None = None) -> Tensor:
        """The loss of one fused output (a list of scales, 0 first) over the ``valid`` samples."""
        ...

    def head_loss(self, output: Tensor, target: Any, rows: Tensor) -> Tensor:
        """The loss a CGGM head trains with, for its output on ``rows``."""
        ...

    def utilisation(self, output: Tensor, target: Any, rows: Tensor) -> float:
        """CGGM's utilisation of a modality: the task's metric of its head's output on ``rows``."""
        ...

    def subset_name(self, subset: Sequence[int], modalities: Sequence[str]) -> str:
        """The name of a subset in logs and reports."""
        ...


class AssembleRows(torch.autograd.Function):
    """Place row tensors into a zero ``(B, M, *rest)`` tensor at (sample, modality) positions: how a
    model with branches (the DS U-Net, the sentiment model) gathers the rows its branches ran for.

    ``parts[i]`` has rows for positions ``(samples[i][r], modalities[i][r])``. With
    ``skip_zero_grads`` the backward returns None (no gradient: autograd does not run that part's
    graph) for a part whose gradient slice is exactly zero; the check syncs the device once.
    """

    @staticmethod
    def forward(ctx, batch: int, n_modalities: int, samples: list[Tensor], modalities: list[Tensor],
                skip_zero_grads: bool, *parts: Tensor) -> Tensor:
        ctx.samples, ctx.modalities, ctx.skip_zero_grads = samples, modalities, skip_zero_grads
        out = parts[0].new_zeros((batch, n_modalities) + tuple(parts[0].shape[1:]))
        for b, m, part in zip(samples, modalities, parts):
            out[b, m] = part
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        grads: list[Tensor | None] = [grad[b, m] if need else None for b, m, need
                                      in zip(ctx.samples, ctx.modalities, ctx.needs_input_grad[5:])]
        if ctx.skip_zero_grads:
            computed = [i for i, g in enumerate(grads) if g is not None]
            if computed:
                nonzero = torch.stack([grads[i].ne(0).any() for i in computed]).tolist()
                for i, keep in zip(computed, nonzero):
                    if not keep:
                        grads[i] = None
        return (None, None, None, None, None, *grads)
