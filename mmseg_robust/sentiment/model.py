"""The sentiment models (docs/design.md §10): Dynamic Sharing for feature sequences, and the
early-fusion baseline, both behind the protocol of :mod:`mmseg_robust.multimodal`.

**DS** (``ds``), branch ``m`` for modality ``m`` (``l``, ``a``, ``v``):

1. its own :class:`~mmseg_robust.sentiment.layers.SequenceEncoder` (projection, positions, a small
   Transformer encoder with key-padding masks);
2. the **shared backbone**: Transformer layers whose attention and feed-forward weights every
   branch shares and whose LayerNorms are the branch's own (Dynamic Sharing), then a final
   per-modality LayerNorm. The backbone runs on the whole sequence, not on a pooled token: on
   one token attention reduces to a linear map, and the shared layers would see no time at all;
3. masked mean pooling over the real frames (padding never reaches the result);
4. the shared regression head (linear + GELU) and the shared ``output_layer`` (CGGM's ``W_F``),
   one value per branch: ``(B, M, 1)``.

Fusion (``fusion``): the segmentation network's classes (:mod:`mmseg_robust.multimodal.fusion`)
with one region, the score: the mean of the branch values over the modalities of a subset that a
sample has, learned per-modality weights (``weighted``), or per-sample weights from each branch's
own pooled features (``gated``: the pooled vector is read as a 1x1 map by the gate's 1x1
convolution). An absent modality's branch never runs. A sample has a modality when it has at
least one real frame of it.

A dedicated model (``modalities``, e.g. ``("a", "v")``) has branches for those modalities only and
takes ``available`` over them; its inputs may hold other modalities, which it never reads.

The branches always run as separate autograd graphs (the modalities have different widths and
lengths, so there is no batched path), assembled with the DS U-Net's row assembly, whose backward
skips a branch that receives no gradient: a subset's backward runs only its own branches (exact GMD).

**Early fusion** (``early_fusion``): one Transformer over the concatenated frames of every
modality (projected to the width, with positions and a learned modality embedding); an absent
modality is zero-filled (its frames are kept as zero features), the classic baseline. ``plain``
trains it with random modality dropout.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, NamedTuple, Sequence

import torch
from torch import Tensor, nn

from mmseg_robust.choices import FUSIONS, MODEL_KINDS, check_choice
from mmseg_robust.errors import MMRobustError
from mmseg_robust.multimodal.branch_fusion import BranchFusion
from mmseg_robust.multimodal.fusion import make_fusion
from mmseg_robust.multimodal.protocol import SHARED, AssembleRows, BranchOutput
from mmseg_robust.sentiment.dataset import MODALITIES, parse_sentiment_modalities
from mmseg_robust.sentiment.errors import SentimentDataError
from mmseg_robust.sentiment.layers import (
    FEED_FORWARD_FACTOR,
    ModalityLayerNorm,
    SequenceEncoder,
    SharedTransformerLayer,
    attention_mask,
    frame_positions,
    masked_mean,
    sinusoidal_encoding,
)

#: One regression value per branch: the sentiment score.
OUTPUTS = 1
#: The gated fusion's gate is a 1x1 convolution; a branch's pooled vector is read as a 1x1 image.
_GATE_SPATIAL_DIMS = 2


class SentimentModelError(MMRobustError):
    """A model that cannot be built as asked, or a checkpoint that does not fit the data."""


class ModalityInput(NamedTuple):
    """One modality of a batch: ``features`` ``(B, L, D)`` and ``padding_mask`` ``(B, L)`` bool,
    True on padding frames."""

    features: Tensor
    padding_mask: Tensor


#: A batch's inputs: modality letter -> its sequences.
SequenceInputs = Mapping[str, ModalityInput]


@dataclass(frozen=True)
class SentimentModelConfig:
    """What builds a sentiment model, stored with every checkpoint: the ``kind`` (``ds`` or
    ``early_fusion``), the input ``feature_dims`` per modality (read from the data; checked when a
    checkpoint is loaded), the width, attention heads, the encoder's and the shared backbone's
    layers, the dropout, the ``fusion`` of the branch values (DS) and the ``modalities`` the model
    has branches for (a dedicated model: fewer). Defaults: width 40, 5 heads, 2 + 2 layers (the sizes
    MulT and CGGM use for MOSI), the mean, every modality (what checkpoints without these fields hold).

    Raises:
        SentimentModelError: an unknown ``kind`` or ``fusion``, feature dimensions not for ``l``,
            ``a``, ``v``, a size below 1, a width not divisible by ``heads``, a dropout outside
            [0, 1), a learned fusion for early fusion, an unknown or empty ``modalities``.
    """

    feature_dims: dict[str, int] = field(default_factory=dict)
    kind: str = "ds"
    width: int = 40
    heads: int = 5
    encoder_layers: int = 2
    backbone_layers: int = 2
    dropout: float = 0.1
    fusion: str = "mean"
    modalities: tuple[str, ...] = MODALITIES

    def __post_init__(self) -> None:
        check_choice(self.kind, MODEL_KINDS, "model", SentimentModelError)
        check_choice(self.fusion, FUSIONS, "fusion", SentimentModelError)
        if self.kind != "ds" and self.fusion != "mean":
            raise SentimentModelError(f"fusion {self.fusion} needs the DS model's branches (model ds)")
        try:
            object.__setattr__(self, "modalities", parse_sentiment_modalities(self.modalities))
        except SentimentDataError as error:
            raise SentimentModelError(str(error)) from None
        if set(self.feature_dims) != set(MODALITIES) or min(self.feature_dims.values()) < 1:
            raise SentimentModelError(f"feature_dims {self.feature_dims}: expected a size of at least 1 for each of "
                                      f"{', '.join(MODALITIES)}")
        object.__setattr__(self, "feature_dims", {m: int(self.feature_dims[m]) for m in MODALITIES})
        for name in ("width", "heads", "encoder_layers", "backbone_layers"):
            if getattr(self, name) < 1:
                raise SentimentModelError(f"{name} {getattr(self, name)}: need {name} >= 1")
        if self.width % self.heads:
            raise SentimentModelError(f"width {self.width}: must be a multiple of heads ({self.heads})")
        if not 0 <= self.dropout < 1:
            raise SentimentModelError(f"dropout {self.dropout}: need 0 <= dropout < 1")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["modalities"] = list(self.modalities)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SentimentModelConfig":
        return cls(**dict(data))


def dims_text(feature_dims: Mapping[str, int]) -> str:
    """``l/a/v 768/5/20``."""
    return f"{'/'.join(MODALITIES)} {'/'.join(str(feature_dims[m]) for m in MODALITIES)}"


def check_feature_dims(config: SentimentModelConfig, feature_dims: Mapping[str, int], model_source: str,
                       data_source: str) -> None:
    """Refuse data whose feature sizes differ from those the model was built for.

    Raises:
        SentimentModelError: one line naming both, e.g. a BERT (768) model on a GloVe (300) file.
    """
    if {m: int(feature_dims[m]) for m in MODALITIES} != config.feature_dims:
        raise SentimentModelError(f"{model_source}: trained on feature dimensions {dims_text(config.feature_dims)}, "
                                  f"but {data_source} has {dims_text(feature_dims)}; evaluate it on a file of "
                                  f"the format it was trained on")


def _check_available(inputs: SequenceInputs, available: Tensor | None, modalities: Sequence[str]) -> Tensor:
    """``available`` ``(B, M)`` bool on the inputs' device; default: every modality."""
    first = inputs[modalities[0]].features
    if available is None:
        return torch.ones((first.shape[0], len(modalities)), dtype=torch.bool, device=first.device)
    if available.shape != (first.shape[0], len(modalities)):
        raise SentimentModelError(f"available must be (B={first.shape[0]}, M={len(modalities)}), "
                                  f"got {tuple(available.shape)}")
    return available.to(device=first.device, dtype=torch.bool)


class SentimentModel(nn.Module):
    """What both sentiment models share: the config, the modalities, the regression head and the
    output layer, the inference API."""

    has_branches = False

    def __init__(self, config: SentimentModelConfig) -> None:
        super().__init__()
        self.config = config
        self.modalities: tuple[str, ...] = config.modalities
        width = config.width
        self.head = nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.Dropout(config.dropout))
        self.output_layer = nn.Linear(width, OUTPUTS)

    def subset_logits(self, inputs: SequenceInputs, available: Tensor, subsets: Sequence[Sequence[int]]
                      ) -> list[tuple[list[Tensor], Tensor]]:
        raise NotImplementedError

    def forward(self, inputs: SequenceInputs, available: Tensor | None = None) -> Tensor:
        """The sentiment score ``(B,)`` from every available modality (0 for a sample with none)."""
        available = _check_available(inputs, available, self.modalities)
        (outputs, _), = self.subset_logits(inputs, available, [tuple(range(len(self.modalities)))])
        return outputs[0].squeeze(-1)


class DSSentimentModel(SentimentModel):
    """Dynamic Sharing for sequences; the module docstring describes it. Offers the branch-model
    protocol of :mod:`mmseg_robust.multimodal`."""

    has_branches = True

    def __init__(self, config: SentimentModelConfig) -> None:
        super().__init__(config)
        width, heads, dropout = config.width, config.heads, config.dropout
        self.encoders = nn.ModuleDict({m: SequenceEncoder(config.feature_dims[m], width, heads, config.encoder_layers,
                                                          dropout) for m in self.modalities})
        self.backbone = nn.ModuleList([SharedTransformerLayer(self.modalities, width, heads, dropout)
                                       for _ in range(config.backbone_layers)])
        self.final_norm = ModalityLayerNorm(self.modalities, width)
        self.fusion: BranchFusion = make_fusion(config.fusion, self.modalities, OUTPUTS, _GATE_SPATIAL_DIMS, (width,))

    # ----------------------------------------------------------------- structure
    def parameter_modalities(self) -> dict[str, str]:
        """``encoders.<m>``, the LayerNorms ``norms.<m>`` of the backbone and the fusion's
        per-modality parameters belong to ``m``; the attention, feed-forward, head, output layer
        and a gate's shared convolution are shared."""
        owners = {f"encoders.{m}.{name}": m for m in self.modalities for name, _ in self.encoders[m].named_parameters()}
        owners.update({f"fusion.{name}": owner for name, owner in self.fusion.parameter_owners().items()})
        for prefix, module in self.named_modules():
            if isinstance(module, ModalityLayerNorm):
                owners.update({f"{prefix}.{local}": m for local, m in module.owned_parameters()})
        return {name: owners.get(name, SHARED) for name, _ in self.named_parameters()}

    def head_parameter_names(self) -> list[str]:
        """The regression head, the output layer and the fusion (``gmd_scope="head"``)."""
        return [name for name, _ in self.named_parameters() if name.startswith(("head.", "output_layer.", "fusion."))]

    def output_parameter_names(self) -> list[str]:
        """The output layer and the fusion (``gmd_scope="output"``; the mean has no parameters)."""
        return [name for name, _ in self.named_parameters() if name.startswith(("output_layer.", "fusion."))]

    def make_classifier_heads(self) -> "SequenceClassifierHeads":
        return SequenceClassifierHeads(self.modalities, self.config.width)

    # ----------------------------------------------------------------- forward
    def branch(self, modality: int, features: Tensor, padding_mask: Tensor) -> tuple[Tensor, Tensor]:
        """Branch ``modality`` on its samples' sequences: (outputs ``(n, 1 + gate channels)``: the
        value, then a gated fusion's gate weight; pooled features ``(n, width)``)."""
        sequence = self.encoders[self.modalities[modality]](features, padding_mask)
        for layer in self.backbone:
            sequence = layer(sequence, padding_mask, modality)
        pooled = masked_mean(self.final_norm(sequence, modality), padding_mask)
        hidden = self.head(pooled)
        value = self.output_layer(hidden)
        if self.fusion.gate_channels:
            as_map = (-1, hidden.shape[1]) + (1,) * _GATE_SPATIAL_DIMS
            gated, = self.fusion.attach_gates([value.view(-1, OUTPUTS, 1, 1)], [hidden.view(as_map)], modality)
            value = gated.flatten(1)
        return value, hidden

    def forward_branches(self, inputs: SequenceInputs, available: Tensor, batched: bool | None = None,
                         return_features: bool = False) -> BranchOutput:
        """Run the branch of every available (sample, modality) pair, one graph per modality
        (``batched`` is accepted for the protocol; there is no batched path)."""
        available = _check_available(inputs, available, self.modalities)
        batch, device = available.shape[0], available.device
        mask = available.cpu()
        present = [m for m in range(len(self.modalities)) if bool(mask[:, m].any())]
        gate_channels = self.fusion.gate_channels
        if not present:
            zeros = torch.zeros((batch, len(self.modalities), OUTPUTS + gate_channels), device=device)
            features = (torch.zeros((batch, len(self.modalities), self.config.width), device=device)
                        if return_features else None)
            return BranchOutput([zeros], available, features, gate_channels)
        samples = {m: mask[:, m].nonzero(as_tuple=True)[0].to(device) for m in present}
        runs = []
        for m in present:
            modality_input = inputs[self.modalities[m]]
            runs.append(self.branch(m, modality_input.features[samples[m]], modality_input.padding_mask[samples[m]]))
        rows = [samples[m] for m in present]
        columns = [torch.full_like(samples[m], m) for m in present]
        n = len(self.modalities)
        values = AssembleRows.apply(batch, n, rows, columns, True, *[value for value, _ in runs])
        features = (AssembleRows.apply(batch, n, rows, columns, True, *[hidden for _, hidden in runs])
                    if return_features else None)
        return BranchOutput([values], available, features, gate_channels)

    def fuse(self, branch_logits: Tensor, available: Tensor, subset: Sequence[int]) -> tuple[Tensor, Tensor]:
        """The fusion of the branch outputs ``(B, M, 1 + gate channels)`` over ``subset`` ∩ available:
        ``(fused (B, 1), valid (B,))``."""
        return self.fusion(branch_logits, available, subset)

    def subset_logits(self, inputs: SequenceInputs, available: Tensor, subsets: Sequence[Sequence[int]]
                      ) -> list[tuple[list[Tensor], Tensor]]:
        """Per subset: ([fused (B, 1)], valid (B,)); the branches run once for all subsets."""
        branches = self.forward_branches(inputs, available)
        results = []
        for subset in subsets:
            fused, valid = self.fuse(branches.logits[0], branches.available, subset)
            results.append(([fused], valid))
        return results


class SequenceClassifierHeads(nn.Module):
    """CGGM's heads for the DS sentiment model: per modality a linear + GELU layer on the branch's
    detached pooled features and an output layer shaped like the model's ``output_layer``."""

    def __init__(self, modalities: Sequence[str], width: int) -> None:
        super().__init__()
        self.modalities = tuple(modalities)
        self.hidden = nn.ModuleDict({m: nn.Sequential(nn.Linear(width, width), nn.GELU()) for m in self.modalities})
        self.output_layers = nn.ModuleDict({m: nn.Linear(width, OUTPUTS) for m in self.modalities})

    def output_weight(self, modality: int) -> nn.Parameter:
        """Head ``modality``'s output-layer weight (CGGM's ``W_fm``, shaped like ``W_F``)."""
        return self.output_layers[self.modalities[modality]].weight

    def forward(self, features: Tensor, modality: int) -> Tensor:
        name = self.modalities[modality]
        return self.output_layers[name](self.hidden[name](features))


class EarlyFusionSentimentModel(SentimentModel):
    """The early-fusion baseline; the module docstring describes it."""

    has_branches = False

    def __init__(self, config: SentimentModelConfig) -> None:
        super().__init__(config)
        width = config.width
        self.projections = nn.ModuleDict({m: nn.Linear(config.feature_dims[m], width) for m in self.modalities})
        self.modality_embedding = nn.Parameter(torch.zeros(len(self.modalities), width))
        nn.init.normal_(self.modality_embedding, std=width ** -0.5)
        self.input_dropout = nn.Dropout(config.dropout)
        layer = nn.TransformerEncoderLayer(width, config.heads, FEED_FORWARD_FACTOR * width, config.dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.transformer = nn.TransformerEncoder(layer, config.encoder_layers + config.backbone_layers,
                                                 enable_nested_tensor=False)
        self.final_norm = nn.LayerNorm(width)

    def parameter_modalities(self) -> dict[str, str]:
        """Everything is shared: every parameter sees every sample, zero-filled or not."""
        return {name: SHARED for name, _ in self.named_parameters()}

    def _fused(self, inputs: SequenceInputs, keep: Tensor) -> Tensor:
        tokens, masks = [], []
        for m, name in enumerate(self.modalities):
            features, padding = inputs[name]
            zero_filled = features * keep[:, m, None, None].to(features.dtype)
            embedded = self.projections[name](zero_filled) + self.modality_embedding[m]
            positions = sinusoidal_encoding(frame_positions(padding), self.config.width)
            tokens.append(embedded + positions.to(embedded.dtype))
            masks.append(padding)
        sequence, padding = torch.cat(tokens, dim=1), torch.cat(masks, dim=1)
        encoded = self.transformer(self.input_dropout(sequence), src_key_padding_mask=attention_mask(padding))
        return self.output_layer(self.head(masked_mean(self.final_norm(encoded), padding)))

    def subset_logits(self, inputs: SequenceInputs, available: Tensor, subsets: Sequence[Sequence[int]]
                      ) -> list[tuple[list[Tensor], Tensor]]:
        """Per subset: the network on the inputs with every modality outside ``subset`` ∩ available
        zero-filled; a sample with none of the subset's modalities is invalid (output 0)."""
        available = _check_available(inputs, available, self.modalities)
        results = []
        for subset in subsets:
            members = torch.zeros(len(self.modalities), dtype=torch.bool, device=available.device)
            members[list(subset)] = True
            keep = available & members
            valid = keep.any(1)
            output = self._fused(inputs, keep)
            output = output * valid[:, None].to(output.dtype)
            results.append(([output], valid))
        return results


#: ``kind`` -> model class (the names of :data:`~mmseg_robust.choices.MODEL_KINDS`).
SENTIMENT_MODELS: dict[str, type[SentimentModel]] = {"ds": DSSentimentModel, "early_fusion": EarlyFusionSentimentModel}


def build_sentiment_model(config: SentimentModelConfig) -> SentimentModel:
    """The model ``config.kind`` describes, freshly initialised (seed torch first for reproducibility)."""
    return SENTIMENT_MODELS[config.kind](config)
