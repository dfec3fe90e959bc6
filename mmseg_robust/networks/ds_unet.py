"""The Dynamic Sharing (DS) U-Net (docs/design.md §5; GMD paper, "Dynamic Sharing").

Per modality ``m`` a **stem** ``f_m`` (the first conv block of stage 0: conv 1 -> F0, its own affine
instance norm, LeakyReLU) maps that modality's single channel to ``F0`` features. A **shared U-Net
backbone** ``T`` processes every available modality's features separately; all its conv weights are
shared, all its norms are :class:`~mmseg_robust.networks.blocks.ModalityNorm` (per-modality affine).
The branch logits ``z_m = T(f_m(x_m))`` are fused over the available modalities of a subset by
the network's :mod:`~mmseg_robust.multimodal.fusion` (a mean, learned per-region weights, or per-voxel
gates from each branch's features); an
absent modality is never zero-filled and its branch is never run.

Two ways to run the branches, equal to float tolerance (``batched=None`` picks the faster one for
the device: batched on CUDA, the loop on the CPU, where ``benchmarks/bench_ds_forward.py`` measured
the loop 1.1-1.3x faster for one backward and about 3x for per-subset backwards):

* ``batched=True``: every available (sample, modality) pair is one row of one tensor through the
  backbone (rows modality-major); each ModalityNorm gathers its affine parameters per row. Fastest
  forward, but one autograd graph: a backward through any subset's loss runs through all rows.
* ``batched=False``: one pass, with its own autograd graph, per modality present in the batch. The
  branch logits are assembled into the ``(B, M, R, ...)`` tensor by a custom autograd function whose
  backward hands a branch **no gradient at all** (None) when its slice of the incoming gradient is
  exactly zero, so a backward through a subset's fused loss only runs the branches of that subset
  (the exact GMD needs k subset gradients; docs/design.md §6.2). That check costs one reduction and one
  device sync per backward. Edge case: a branch whose forward produced inf/NaN would otherwise have
  back-propagated NaN (0 * inf); skipping it gives 0.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from mmseg_robust.errors import NetworkError
from mmseg_robust.multimodal.branch_fusion import BranchFusion
from mmseg_robust.multimodal.fusion import make_fusion
from mmseg_robust.multimodal.protocol import SHARED, AssembleRows, BranchOutput, RowModality

from .base import AxisSizes, RegionNetwork, _check_available
from .blocks import ConvNormAct, ModalityNorm, UNetBackbone, init_weights
from .classifier_heads import ConvClassifierHeads


class DynamicSharingUNet(RegionNetwork):
    """DS U-Net: per-modality stems, shared backbone with per-modality norms, fusion of the branch
    logits (``fusion``: ``mean``, ``weighted`` or ``gated``, :mod:`~mmseg_robust.multimodal.fusion`). The other
    arguments are :class:`~mmseg_robust.networks.base.RegionNetwork`'s; ``from_plan`` reads them
    from a plan. Offers the branch model protocol of :mod:`mmseg_robust.multimodal`.

    ``modalities`` are put in canonical order (``flair, t1, t1ce, t2``); the modality axis of the
    images and of ``available`` follows that order.
    """

    kind = "ds"
    has_branches = True

    def __init__(self, spatial_dims: int, modalities: Sequence[str], features_per_stage: Sequence[int],
                 kernel_sizes: Sequence[AxisSizes], strides: Sequence[AxisSizes], n_conv_per_stage: int = 2,
                 n_regions: int = 3, deep_supervision: bool = False, fusion: str = "mean"):
        super().__init__(spatial_dims, modalities, features_per_stage, kernel_sizes, strides, n_conv_per_stage,
                         n_regions, deep_supervision)
        kernels, strides, features = self.kernel_sizes, self.strides, self.features_per_stage
        self.stems = nn.ModuleDict({m: ConvNormAct(spatial_dims, 1, features[0], kernels[0], strides[0],
                                                   norm="instance") for m in self.modalities})
        self.backbone = UNetBackbone(spatial_dims, features[0], features, kernels, strides, n_conv_per_stage,
                                     n_regions, deep_supervision, norm="modality", n_modalities=self.n_modalities,
                                     include_stem=False)
        self.apply(init_weights)
        # The features each output scale's layer reads: scale 0, then the deep-supervision stages.
        scale_channels = [features[0]] + [features[k] for k in range(1, self.backbone.n_scales)]
        self.fusion: BranchFusion = make_fusion(fusion, self.modalities, n_regions, spatial_dims, scale_channels)

    # ----------------------------------------------------------------- structure
    def parameter_modalities(self) -> dict[str, str]:
        """Every named parameter -> its modality name or ``"shared"``, read off the module structure:
        the parameters of ``stems.<m>`` and the fusion's per-modality parameters (``fusion.scores.<m>``,
        the gates' ``fusion.gates.<k>.bias.<m>``) belong to ``m``; ``weight.<i>`` / ``bias.<i>`` of
        every ModalityNorm belong to ``modalities[i]``; everything else (the gates' conv) is shared."""
        owners: dict[str, str] = {}
        for modality, stem in self.stems.items():
            for name, _ in stem.named_parameters():
                owners[f"stems.{modality}.{name}"] = modality
        owners.update({f"fusion.{name}": owner for name, owner in self.fusion.parameter_owners().items()})
        for prefix, module in self.named_modules():
            if isinstance(module, ModalityNorm):
                for local, index in module.owned_parameters():
                    owners[f"{prefix}.{local}"] = self.modalities[index]
        return {name: owners.get(name, SHARED) for name, _ in self.named_parameters()}

    def head_parameter_names(self) -> list[str]:
        """Names of the parameters of the last (full-resolution) decoder stage and of every output
        layer: what ``--gmd-scope head`` builds its Gram matrix from (docs/design.md §6.2)."""
        prefixes = (f"backbone.decoder.{len(self.backbone.decoder) - 1}.", "backbone.output_layer.",
                    "backbone.ds_layers.", "fusion.")
        return [name for name, _ in self.named_parameters() if name.startswith(prefixes)]

    def output_parameter_names(self) -> list[str]:
        """Names of the parameters of the 1x1 output layers (full resolution and deep supervision)
        and of the fusion: ``--gmd-scope output``, whose per-subset gradients need no backward
        through any convolution block."""
        prefixes = ("backbone.output_layer.", "backbone.ds_layers.", "fusion.")
        return [name for name, _ in self.named_parameters() if name.startswith(prefixes)]

    def make_classifier_heads(self) -> ConvClassifierHeads:
        """CGGM's heads: per modality a conv block and an output layer like ``output_layer``, on the
        last decoder features (``F0`` channels)."""
        return ConvClassifierHeads(self.spatial_dims, self.features_per_stage[0], self.n_regions, self.modalities)

    # ----------------------------------------------------------------- forward
    def forward_branches(self, images: Tensor, available: Tensor, batched: bool | None = None,
                         return_features: bool = False) -> BranchOutput:
        """Run the branch of every available (sample, modality) pair; see the module docstring."""
        available = self._check_inputs(images, available)
        return self._branches(images, available, batched, return_features, all_scales=True)

    def _branches(self, images: Tensor, available: Tensor, batched: bool | None, return_features: bool,
                  all_scales: bool) -> BranchOutput:
        batch, device = images.shape[0], images.device
        if batched is None:
            batched = device.type == "cuda"
        mask = available.cpu()
        per_modality = [mask[:, m].nonzero(as_tuple=True)[0] for m in range(self.n_modalities)]
        present = [m for m in range(self.n_modalities) if len(per_modality[m])]
        if not present:
            return self._empty_output(images, available, return_features, all_scales)
        samples = {m: per_modality[m].to(device, non_blocking=True) for m in present}
        stems = list(self.stems.values())

        def stem(m: int) -> Tensor:
            return stems[m](images[samples[m], m].unsqueeze(1))

        if batched:
            features_in = torch.cat([stem(m) for m in present]) if len(present) > 1 else stem(present[0])
            row_modality = torch.cat([torch.full((len(per_modality[m]),), m, dtype=torch.long)
                                      for m in present]).to(device, non_blocking=True)
            logits, last = self._backbone(features_in, row_modality, all_scales)
            row_samples = [torch.cat([samples[m] for m in present])]
            row_modalities = [row_modality]
            scale_parts, feature_parts = [[scale] for scale in logits], [last]
            skip = False  # one graph: nothing to skip
        else:
            runs = [self._backbone(stem(m), m, all_scales) for m in present]
            row_samples = [samples[m] for m in present]
            row_modalities = [torch.full_like(samples[m], m) for m in present]
            scale_parts = [[run[0][k] for run in runs] for k in range(len(runs[0][0]))]
            feature_parts = [run[1] for run in runs]
            skip = True  # a branch whose gradient slice is all zero is not run backwards
        assembled = [AssembleRows.apply(batch, self.n_modalities, row_samples, row_modalities, skip, *parts)
                     for parts in scale_parts]
        features = (AssembleRows.apply(batch, self.n_modalities, row_samples, row_modalities, skip, *feature_parts)
                    if return_features else None)
        return BranchOutput(logits=assembled, available=available, features=features,
                            gate_channels=self.fusion.gate_channels)

    def _backbone(self, x: Tensor, row_modality: RowModality, all_scales: bool) -> tuple[list[Tensor], Tensor]:
        """The backbone's (outputs per scale, last features); a gated fusion's gate weights follow
        each scale's logits (``2R`` channels)."""
        if not self.fusion.gate_channels:
            return self.backbone(x, row_modality, all_scales)
        logits, features = self.backbone(x, row_modality, all_scales, all_features=True)
        return self.fusion.attach_gates(logits, features, row_modality), features[0]

    def _empty_output(self, images: Tensor, available: Tensor, return_features: bool,
                      all_scales: bool) -> BranchOutput:
        batch, spatial = images.shape[0], images.shape[2:]
        shapes = [tuple(s // f for s, f in zip(spatial, factor))
                  for factor in (self.output_strides if all_scales else self.output_strides[:1])]
        channels = self.n_regions + self.fusion.gate_channels
        logits = [images.new_zeros((batch, self.n_modalities, channels) + shape) for shape in shapes]
        features = (images.new_zeros((batch, self.n_modalities, self.features_per_stage[0]) + tuple(spatial))
                    if return_features else None)
        return BranchOutput(logits=logits, available=available, features=features,
                            gate_channels=self.fusion.gate_channels)

    def fuse(self, branch_logits: Tensor, available: Tensor, subset: Sequence[int]) -> tuple[Tensor, Tensor]:
        """The fusion of the branch logits over ``subset`` ∩ available: ``(fused (B, R, *s), valid (B,))``."""
        if branch_logits.dim() < 3 or branch_logits.shape[1] != self.n_modalities:
            raise NetworkError(f"branch logits must be (B, M={self.n_modalities}, R, ...), "
                               f"got shape {tuple(branch_logits.shape)}")
        available = _check_available(available, branch_logits.shape[0], self.n_modalities, branch_logits.device)
        return self.fusion(branch_logits, available, subset)

    def fuse_maps(self, maps: Sequence[Tensor], subset: Sequence[int]) -> Tensor:
        """Fuse one case's logit maps ``(R, *spatial)`` of the modalities of ``subset`` (in that
        order; all present): the evaluation's shared pass fuses accumulated sliding-window maps."""
        return self.fusion.combine_maps(maps, subset)

    def subset_logits(self, images: Tensor, available: Tensor, subsets: Sequence[Sequence[int]],
                      batched: bool | None = None) -> list[tuple[list[Tensor], Tensor]]:
        """For each subset: (fused logits per scale, valid). One :meth:`forward_branches`, then a
        cheap fusion per subset."""
        branches = self.forward_branches(images, available, batched=batched)
        results = []
        for subset in subsets:
            fused = [self.fuse(scale, branches.available, subset) for scale in branches.logits]
            results.append(([f for f, _ in fused], fused[0][1]))
        return results

    def forward(self, images: Tensor, available: Tensor | None = None) -> Tensor:
        """Inference: fused logits over all available modalities at full resolution, ``(B, R, *spatial)``.

        ``available`` defaults to all modalities; a sample with none gets zeros.
        """
        available = self._check_inputs(images, available)
        branches = self._branches(images, available, batched=None, return_features=False, all_scales=False)
        fused, _ = self.fusion(branches.logits[0], available, range(self.n_modalities))
        return fused

    def window_maps(self, images: Tensor, available: Tensor | None = None) -> Tensor:
        """What sliding-window inference accumulates per window: the fused logits, or for a gated
        fusion ``[sum e^s z, sum e^s]`` over the available modalities (:meth:`maps_to_logits`)."""
        if not self.fusion.gate_channels:
            return self(images, available)
        available = self._check_inputs(images, available)
        branches = self._branches(images, available, batched=None, return_features=False, all_scales=False)
        return self.fusion.window_maps(branches.logits[0], available)

    def branch_window_maps(self, images: Tensor, available: Tensor) -> Tensor:
        """Every available modality's :meth:`window_maps` from that modality alone, stacked on the
        channels ``(B, M * C, *spatial)`` (zeros for the absent): the evaluation's shared pass
        accumulates all branches in one sliding window. Equal to M calls with one modality each,
        since a branch's output does not depend on the other branches."""
        available = self._check_inputs(images, available)
        logits = self._branches(images, available, batched=None, return_features=False, all_scales=False).logits[0]
        maps = []
        for m in range(self.n_modalities):
            alone = torch.zeros_like(available)
            alone[:, m] = available[:, m]
            maps.append(self.fusion.window_maps(logits, alone) if self.fusion.gate_channels
                        else self.fusion(logits, alone, range(self.n_modalities))[0])
        return torch.cat(maps, dim=1)

    def maps_to_logits(self, maps: Tensor) -> Tensor:
        """Accumulated :meth:`window_maps` ``(C, *s)`` -> logits ``(R, *s)``."""
        return self.fusion.maps_to_logits(maps)
