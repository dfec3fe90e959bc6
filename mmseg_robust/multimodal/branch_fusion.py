"""The fusion of a subset's branch outputs as a module: the base class :class:`BranchFusion` (the
weights of the members present, the weighted sum, the fusion of accumulated maps) and the two
fusions linear in the branch outputs, ``mean`` and ``weighted``. What each fusion is, and why, is
:mod:`mmseg_robust.multimodal.fusion`'s docstring; the ``gated`` one is
:mod:`~mmseg_robust.multimodal.gated_fusion`.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from mmseg_robust.errors import NetworkError
from mmseg_robust.multimodal.protocol import SHARED


def check_subset(subset: Sequence[int], n_modalities: int) -> list[int]:
    """``subset`` as a list of distinct modality indices in ``[0, n_modalities)`` (non-empty)."""
    indices = [int(m) for m in subset]
    if not indices:
        raise NetworkError("a modality subset must not be empty")
    if len(set(indices)) != len(indices) or any(not 0 <= m < n_modalities for m in indices):
        raise NetworkError(f"subset {tuple(indices)} must hold distinct modality indices in [0, {n_modalities})")
    return indices


def broadcast_weights(weights: Tensor, target_dims: int) -> Tensor:
    """(B, R) -> (B, R, 1, ...) for logits with ``target_dims`` axes."""
    return weights.reshape(weights.shape + (1,) * (target_dims - weights.dim()))


class BranchFusion(nn.Module):
    """Base: per-sample, per-region weights of a subset's branches, summing to 1 over the
    available ones (0 for the absent), and the weighted sum."""

    kind = ""
    #: Built with the network's ``spatial_dims`` and the feature channels of every output scale.
    reads_features = False
    #: Channels per branch output beyond the R logits (a gated fusion's gate scores).
    gate_channels = 0

    def __init__(self, modalities: Sequence[str], n_regions: int) -> None:
        super().__init__()
        self.modalities = tuple(modalities)
        self.n_regions = n_regions

    def subset_weights(self, available: Tensor, subset: Sequence[int]) -> Tensor:
        """``(B, k, R)`` weights of the ``k`` subset members from ``available`` ``(B, M)`` bool."""
        raise NotImplementedError

    def parameter_owners(self) -> dict[str, str]:
        """Each parameter's name (relative to the fusion) -> the modality that owns it or ``shared``.
        A per-modality parameter's name ends in its modality (``scores.<m>``, ``gates.<k>.bias.<m>``):
        a subset without ``m`` never moves it, so the strategies count it as ``m``'s."""
        owners = {}
        for name, _ in self.named_parameters():
            last = name.rsplit(".", 1)[-1]
            owners[name] = last if last in self.modalities else SHARED
        return owners

    def forward(self, branch_logits: Tensor, available: Tensor, subset: Sequence[int]) -> tuple[Tensor, Tensor]:
        """``(fused (B, R, *s), valid (B,))`` from ``branch_logits`` ``(B, M, R, *s)``; a sample with
        no modality of the subset is invalid and its fused logits are 0."""
        indices = check_subset(subset, branch_logits.shape[1])
        member_available = available[:, indices]
        weights = self.subset_weights(member_available, indices).to(branch_logits.dtype)
        fused = None
        for j, m in enumerate(indices):
            term = branch_logits[:, m] * broadcast_weights(weights[:, j], branch_logits.dim() - 1)
            fused = term if fused is None else fused + term
        return fused, member_available.any(1)

    @torch.no_grad()
    def combine_maps(self, maps: Sequence[Tensor], subset: Sequence[int]) -> Tensor:
        """Fuse one case's per-modality logit maps ``(R, *spatial)`` (all present), e.g. the
        accumulated sliding-window logits of the evaluation's shared pass (inference only)."""
        indices = check_subset(subset, len(self.modalities))
        if len(maps) != len(indices):
            raise NetworkError(f"{len(maps)} logit maps for a subset of {len(indices)} modalities")
        present = torch.ones((1, len(indices)), dtype=torch.bool, device=maps[0].device)
        weights = self.subset_weights(present, indices)[0].to(maps[0].dtype)  # (k, R)
        return sum(map_ * broadcast_weights(w, map_.dim()) for map_, w in zip(maps, weights))

    def maps_to_logits(self, maps: Tensor) -> Tensor:
        """Accumulated sliding-window maps -> logits: the same for a fusion linear in the logits."""
        return maps


class MeanFusion(BranchFusion):
    """``z_S = mean_{m in S ∩ available} z_m``."""

    kind = "mean"

    def subset_weights(self, available: Tensor, subset: Sequence[int]) -> Tensor:
        counts = available.sum(1, keepdim=True).clamp(min=1)
        weights = available.to(torch.float32) / counts
        return weights.unsqueeze(-1).expand(-1, -1, self.n_regions)


class WeightedFusion(BranchFusion):
    """Learned per-region scores ``a_{m,r}``, softmax over the subset's available modalities.
    Modality m's scores are its own parameters (``scores.<m>``): a subset without m never moves them."""

    kind = "weighted"

    def __init__(self, modalities: Sequence[str], n_regions: int) -> None:
        super().__init__(modalities, n_regions)
        self.scores = nn.ParameterDict({m: nn.Parameter(torch.zeros(n_regions)) for m in self.modalities})

    def subset_weights(self, available: Tensor, subset: Sequence[int]) -> Tensor:
        scores = torch.stack([self.scores[self.modalities[m]] for m in subset])  # (k, R)
        scores = scores.unsqueeze(0).expand(available.shape[0], -1, -1)
        mask = available.unsqueeze(-1)
        valid = available.any(1)[:, None, None]
        # Rows without any member get finite scores (no NaN in the softmax) and weight 0.
        scores = torch.where(mask | ~valid, scores, torch.full_like(scores, float("-inf")))
        return torch.softmax(scores, dim=1) * valid
