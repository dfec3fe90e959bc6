"""What an ideal linear predictor scores on a synthetic sentiment file, per modality subset
(docs/design.md §10).

A real frame of modality ``m`` is ``noise + offset + strength_m * latent_m * direction_m``
(:mod:`mmseg_robust.sentiment.synthetic`). Given the directions, what a sample's frames say about
its label is their mean projection on the direction, one scalar per modality:
``strength_m * latent_m + offset projection + frame noise / sqrt(real frames)`` (the orthogonal
components hold offsets and noise only). The best linear predictor of a subset is the least-squares
fit, with intercept, of the label on its modalities' scalars. These scalars are simulated directly
(no frame arrays) for :data:`FIT_SAMPLES` samples, with the spec's latents, label grid and length
distribution, the fit is scored on :data:`SCORE_SAMPLES` more: what a linear model on mean-pooled
features reaches with unlimited training data. A test split of MOSI's size (686) scatters around it
by about two points of Acc-2, and a model that weighs samples by their length could edge past it.
Audio's rare -inf entries, zeroed by the reader, are left out (under one per cent of frames, in one
feature).

What this gave at generator version 2, MOSI, aligned (MMSA); Acc-2 non0 (%), MAE, Corr:

========  ===================  ===================
subset    graded               shared
========  ===================  ===================
l         78.1  0.703  0.737   89.1  0.422  0.912
a         72.9  0.815  0.622   59.7  1.005  0.281
v         68.1  0.901  0.506   58.0  1.019  0.228
a,v       76.6  0.742  0.701   62.2  0.980  0.350
l,a       80.2  0.654  0.776   89.1  0.420  0.913
l,v       79.3  0.676  0.759   89.1  0.421  0.912
Full      81.2  0.631  0.794   89.1  0.419  0.913
========  ===================  ===================

``shared`` reproduces what had been measured on its files (correlation l 0.913, a 0.282, v 0.230;
Acc-2 non0 l 89.1, a 59.8, v 58.0, a,v 62.2, Full 89.2). MOSEI (3 annotators) differs by under a
point; ``mmrobust sentiment verify --data FILE`` prints a file's table.
"""

from __future__ import annotations

import numpy as np

from mmseg_robust.sentiment.dataset import MODALITIES
from mmseg_robust.sentiment.metrics import score_predictions
from mmseg_robust.sentiment.report import TABLE_SUBSETS, subset_modalities
from mmseg_robust.sentiment.synthetic import (
    SIGNAL_MODELS,
    SyntheticSentimentSpec,
    draw_labels,
    draw_latents,
    draw_lengths,
)

#: Samples the least-squares fit sees and samples it is scored on: the ceilings move by about 0.2
#: point of Acc-2 from one seed to another.
FIT_SAMPLES = 200_000
SCORE_SAMPLES = 200_000
#: Fixed, so that a spec's ceilings do not depend on its seed.
CEILING_SEED = 20_240_601
#: The scores reported, and the factor that turns each into its reported unit (Acc-2 in %).
CEILING_SCORES: dict[str, float] = {"acc2_non0": 100.0, "mae": 1.0, "corr": 1.0}


def pooled_projections(spec: SyntheticSentimentSpec, rng: np.random.Generator,
                       n: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Each modality's mean projection on its direction (n,) and the labels (n,), simulated.

    Args:
        spec: the generator's spec (its signal model, corpus and lengths).
        rng: the random generator.
        n: samples.
    """
    model = SIGNAL_MODELS[spec.signal]
    latent, carried = draw_latents(model, rng, n)
    labels = draw_labels(spec, rng, latent)
    lengths = draw_lengths(spec, rng, n)
    projections = {}
    for modality in MODALITIES:
        offset = rng.normal(0.0, model.speaker_std[modality], n)
        # The mean of `lengths` unit-variance frame projections.
        noise = rng.normal(size=n) / np.sqrt(lengths[modality])
        projections[modality] = model.strength[modality] * carried[modality] + offset + noise
    return projections, labels


def ideal_ceilings(spec: SyntheticSentimentSpec) -> dict[str, dict[str, float]]:
    """The best linear predictor's scores per modality subset, for the generator of ``spec``.

    Args:
        spec: the spec (its seed and sample counts do not matter).

    Returns:
        ``{subset: {"acc2_non0": %, "mae": ..., "corr": ...}}`` for the subsets of
        :data:`~mmseg_robust.sentiment.report.TABLE_SUBSETS`, in that order.
    """
    rng = np.random.default_rng(CEILING_SEED)
    fit, fit_labels = pooled_projections(spec, rng, FIT_SAMPLES)
    held_out, labels = pooled_projections(spec, rng, SCORE_SAMPLES)
    ceilings = {}
    for subset in TABLE_SUBSETS:
        modalities = subset_modalities(subset)
        design = np.column_stack([fit[m] for m in modalities] + [np.ones(FIT_SAMPLES)])
        weights = np.linalg.lstsq(design, fit_labels.astype(np.float64), rcond=None)[0]
        predictions = np.column_stack([held_out[m] for m in modalities] + [np.ones(SCORE_SAMPLES)]) @ weights
        scores = score_predictions(predictions, labels, f"subset {subset}").to_dict()
        ceilings[subset] = {name: scores[name] * unit for name, unit in CEILING_SCORES.items()}
    return ceilings
