"""``gated``: per-voxel weights of the branch logits computed from each branch's own features
(docs/design.md §5.2), after SimMLM's masked-softmax routing (ICCV 2025) and MoME's per-voxel gate
(MICCAI 2024), within DS's rules.

Per modality m, output scale k and region r a gate score map ``s_m = c tanh(g_k(h_m) / c)``, where
``h_m`` is branch m's decoder features at that scale (at scale 0 what ``output_layer`` reads) and
``g_k(h) = W_k h + b_{k,m}``: one zero-initialised 1x1 conv shared by the modalities plus a
per-modality bias (owned by m). Why shared: the branch features already come through
modality-specific norms, the output layer reading them is shared too, and a shared conv learns
from every subset's loss; the bias is exactly the ``weighted`` fusion's per-region score, so with
``W = 0`` this is that fusion. ``c`` (:data:`GATE_BOUND`) bounds the scores, so that the
shifted weight ``exp(s - c)`` lies in ``[e^-2c, 1]``: finite in fp16 without a max over members.

Fused logits per voxel: ``z_S = sum_{m in S} e^{s_m} z_m / sum_{m in S} e^{s_m}``, a softmax over
the members present (an absent one is masked with -inf: weight exactly 0, no gradient). One
member gives its logits unchanged; gates start at 0, so the fusion starts as the mean. Deep
supervision: every coarser output has its own scale's gate (its own conv on that stage's
features), so that the auxiliary losses train the decoder towards the same gated objective as
the full-resolution one instead of asking every branch to vote on every region.

The branch outputs of a gated network carry ``2R`` channels per branch: the R logits, then the R
gate weights ``exp(s - c)``, computed once per branch (:attr:`BranchFusion.gate_channels`;
``BranchOutput.predictions`` strips them), so the strategies' ``fuse(branch_outputs, available,
subset)`` protocol is unchanged. Sliding-window inference accumulates, per window and mirror,
``[sum e^(s-c) z, sum e^(s-c)]`` over the modalities used
(:meth:`GatedFusion.window_maps`) and divides at the end (:meth:`GatedFusion.maps_to_logits`), so
the maps of single-modality passes add up to any subset's: the evaluation's shared pass stays exact.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from mmseg_robust.errors import NetworkError
from mmseg_robust.multimodal.branch_fusion import BranchFusion, broadcast_weights, check_subset
from mmseg_robust.multimodal.protocol import RowModality

#: The gate's 1x1 convolution per number of spatial axes (a sequence model's pooled vector is read
#: as a 1x1 image).
POINTWISE_CONVS: dict[int, type[nn.Module]] = {2: nn.Conv2d, 3: nn.Conv3d}

#: ``c``: gate scores lie in ``(-c, c)``.
GATE_BOUND = 4.0
#: Floor of an accumulated gate denominator (only a map without any modality reaches it; its numerator is 0).
_TINY = 1e-30


class GateHead(nn.Module):
    """``c tanh((W h + b_m) / c)``: ``conv`` (1x1, no bias, zeros) shared, ``bias.<m>`` per modality."""

    def __init__(self, spatial_dims: int, channels: int, n_regions: int, modalities: Sequence[str],
                 bound: float = GATE_BOUND) -> None:
        super().__init__()
        # Built without a random init (zeros follow): the choice of fusion leaves the rest of a
        # seeded network's initialisation as it is.
        if spatial_dims not in POINTWISE_CONVS:
            raise NetworkError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        self.conv = nn.utils.skip_init(POINTWISE_CONVS[spatial_dims], channels, n_regions, 1, bias=False)
        nn.init.zeros_(self.conv.weight)
        self.bias = nn.ParameterDict({m: nn.Parameter(torch.zeros(n_regions)) for m in modalities})
        self.bound = bound

    def forward(self, features: Tensor, row_modality: RowModality) -> Tensor:
        biases = list(self.bias.values())
        shape = (-1, self.conv.out_channels) + (1,) * (features.dim() - 2)
        if isinstance(row_modality, int):
            bias = biases[row_modality].view(shape)
        else:
            bias = torch.stack(biases).index_select(0, row_modality).view(shape)
        return self.bound * torch.tanh((self.conv(features) + bias) / self.bound)

    def weights(self, features: Tensor, row_modality: RowModality) -> Tensor:
        """``exp(s - c)`` in ``[e^-2c, 1]``: the unnormalised softmax weight, shifted by the bound
        so that no term exceeds 1 (no overflow in half precision, no max over the members)."""
        return torch.exp(self(features, row_modality) - self.bound)


class GatedFusion(BranchFusion):
    """Per-voxel softmax of the branches' own gate scores over the members present."""

    kind = "gated"
    reads_features = True

    def __init__(self, modalities: Sequence[str], n_regions: int, spatial_dims: int = 3,
                 scale_channels: Sequence[int] = ()) -> None:
        super().__init__(modalities, n_regions)
        if not scale_channels:
            raise NetworkError("the gated fusion needs the feature channels of every output scale")
        self.gate_channels = n_regions
        self.gates = nn.ModuleList([GateHead(spatial_dims, c, n_regions, self.modalities) for c in scale_channels])

    def attach_gates(self, logits: Sequence[Tensor], features: Sequence[Tensor],
                     row_modality: RowModality) -> list[Tensor]:
        """Each scale's branch outputs: its logits, then its gate weights ``exp(s - c)`` (``2R``
        channels), computed once per branch rather than once per subset."""
        return [torch.cat([z, gate.weights(h, row_modality).to(z.dtype)], 1)
                for z, h, gate in zip(logits, features, self.gates)]

    def _check_channels(self, channels: int) -> None:
        if channels != 2 * self.n_regions:
            raise NetworkError(f"the gated fusion takes {2 * self.n_regions} channels per branch (R logits, R gate "
                               f"scores), got {channels}")

    def _exponentials(self, branch_outputs: Tensor, available: Tensor,
                      indices: Sequence[int]) -> tuple[list[Tensor], Tensor]:
        """Per member its gate weight ``exp(s_m - c)``, 0 where the sample lacks m (the softmax's
        -inf mask: weight 0, no gradient), and their sum (1 for a sample without any member, whose
        terms are all 0)."""
        regions = self.n_regions
        members = available[:, indices].to(branch_outputs.dtype)
        shape = (-1,) + (1,) * (branch_outputs.dim() - 2)
        exps = [branch_outputs[:, m, regions:] * members[:, j].view(shape) for j, m in enumerate(indices)]
        total = exps[0]
        for term in exps[1:]:
            total = total + term
        return exps, total + (1 - members.amax(1)).view(shape)

    def voxel_weights(self, branch_outputs: Tensor, available: Tensor, subset: Sequence[int]) -> Tensor:
        """``(B, k, R, *s)`` weights of the subset's members: the softmax of their gate scores over
        the members present (an absent one: exactly 0); 0 for a sample with none."""
        indices = check_subset(subset, branch_outputs.shape[1])
        self._check_channels(branch_outputs.shape[2])
        exps, total = self._exponentials(branch_outputs, available, indices)
        return torch.stack(exps, 1) / total.unsqueeze(1)

    def forward(self, branch_outputs: Tensor, available: Tensor, subset: Sequence[int]) -> tuple[Tensor, Tensor]:
        indices = check_subset(subset, branch_outputs.shape[1])
        self._check_channels(branch_outputs.shape[2])
        regions = self.n_regions
        valid = available[:, indices].any(1)
        if len(indices) == 1:  # that branch's logits exactly (0 where the sample lacks it)
            own = branch_outputs[:, indices[0], :regions]
            return own * broadcast_weights(valid.to(own.dtype), own.dim()), valid
        exps, total = self._exponentials(branch_outputs, available, indices)
        numerator = None
        for e, m in zip(exps, indices):
            term = e * branch_outputs[:, m, :regions]
            numerator = term if numerator is None else numerator + term
        return numerator / total, valid

    def window_maps(self, branch_outputs: Tensor, available: Tensor) -> Tensor:
        """``(B, 2R, *s)`` float32: ``[sum_m e^{s_m - c} z_m, sum_m e^{s_m - c}]`` over the available
        modalities, what sliding-window inference accumulates (Gaussian weights, mirrors); the
        common factor ``e^-c`` cancels in the ratio."""
        self._check_channels(branch_outputs.shape[2])
        regions = self.n_regions
        logits = branch_outputs[:, :, :regions].float()
        weights = branch_outputs[:, :, regions:].float() * broadcast_weights(available, logits.dim())
        return torch.cat([(weights * logits).sum(1), weights.sum(1)], 1)

    def maps_to_logits(self, maps: Tensor) -> Tensor:
        """Accumulated ``(2R, *s)`` maps -> logits ``(R, *s)``: numerator over denominator."""
        return maps[:self.n_regions] / maps[self.n_regions:].clamp(min=_TINY)

    @torch.no_grad()
    def combine_maps(self, maps: Sequence[Tensor], subset: Sequence[int]) -> Tensor:
        """The subset's logits from its members' accumulated ``(2R, *s)`` maps: the sums of their
        numerators over the sums of their denominators (what predicting the subset accumulates)."""
        indices = check_subset(subset, len(self.modalities))
        if len(maps) != len(indices):
            raise NetworkError(f"{len(maps)} logit maps for a subset of {len(indices)} modalities")
        self._check_channels(maps[0].shape[0])
        total = maps[0] if len(maps) == 1 else torch.stack(list(maps)).sum(0)
        return self.maps_to_logits(total)
