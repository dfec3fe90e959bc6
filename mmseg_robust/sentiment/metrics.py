"""Scores of sentiment regression over one split (docs/design.md §10): the two Acc-2 conventions,
their weighted F1, Acc-7, Acc-5, MAE and Pearson r, as fractions. numpy only.

``y`` is the label (the annotators' mean rating in [-3, 3]), ``p`` the prediction.

* **Acc-2 non0** (the headline: MulT, GMC and so GMD's Table 4): samples with ``y == 0`` exactly
  are dropped, then positive ``y > 0`` against ``p > 0`` (a prediction of exactly 0 counts as
  negative).
* **Acc-2 has0** (MMSA): every sample, non-negative ``y >= 0`` against ``p >= 0``.
* Zero labels are excluded only in non0. CGGM's released code uses a third Acc-2, ``y > 0``
  against ``p > 0`` over every sample (zero labels count as negative); it is not reported.
* **F1 non0 / F1 has0**: binary F1 of the same two labelings, the per-class F1 averaged with
  weights = the TRUE class counts, which is sklearn's ``f1_score(y_true, y_pred,
  average="weighted")``. MulT, GMC and CGGM call ``f1_score(y_pred, y_true, ...)`` with the
  arguments swapped, which weights by the PREDICTED counts (the per-class F1 is symmetric, the
  weights are not); on a biased predictor the two differ by many points.
* **Acc-7**: ``round(clip(p, -3, 3)) == round(clip(y, -3, 3))`` with numpy's round half to even
  (0.5 -> 0, 1.5 -> 2, -2.5 -> -2); **Acc-5** the same with the clip to [-2, 2].
* **MAE**: mean ``|p - y|`` on the raw (unclipped) predictions, as MulT and MMSA compute it.
* **Corr**: Pearson r. It is undefined when the predictions or the labels are constant (a
  collapsed model): then NaN here, ``null`` in JSON and ``n/a`` in tables, never a made-up 0
  that would pass for "no correlation" in an average.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

import numpy as np

from mmseg_robust.errors import MMRobustError

#: The bounds of Acc-7's and Acc-5's clip: 7 classes -3..3 and 5 classes -2..2.
ACC7_BOUND = 3.0
ACC5_BOUND = 2.0


class SentimentEvaluationError(MMRobustError):
    """Predictions that cannot be scored, runs that cannot be evaluated or reported together (or
    no place to write their report), a subset the model has no branch for, or a sentiment summary
    that cannot be read (one line naming the run, subset or file)."""


@dataclass(frozen=True)
class SentimentScores:
    """Every score of one modality subset over one split, as fractions (MAE in label units).

    NaN marks an undefined value: ``corr`` of a constant predictor or constant labels, the non0
    scores of a split whose labels are all 0.
    """

    acc2_non0: float
    acc2_has0: float
    f1_non0: float
    f1_has0: float
    acc7: float
    acc5: float
    mae: float
    corr: float

    def to_dict(self) -> dict[str, float]:
        """``{acc2_non0, acc2_has0, f1_non0, f1_has0, acc7, acc5, mae, corr}``, in that order."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SentimentScores":
        """The inverse of :meth:`to_dict`; ``None`` (JSON's form of NaN) reads as NaN.

        Raises:
            KeyError, TypeError, ValueError: a missing key or a value that is not a number.
        """
        return cls(**{name: math.nan if data[name] is None else float(data[name]) for name in SCORE_KEYS})


#: The keys of :meth:`SentimentScores.to_dict`, in table order.
SCORE_KEYS: tuple[str, ...] = tuple(f.name for f in fields(SentimentScores))


def weighted_binary_f1(truth: np.ndarray, predicted: np.ndarray) -> float:
    """Binary F1 of two boolean labelings, the per-class F1 averaged with weights = the class
    counts of ``truth`` (sklearn's ``f1_score(truth, predicted, average="weighted")``).

    Passing the arguments swapped, as MulT, GMC and CGGM do, weights by the predicted counts. A
    class never predicted has F1 0 (sklearn's ``zero_division`` default). NaN for no samples.
    """
    truth = np.asarray(truth, dtype=bool)
    predicted = np.asarray(predicted, dtype=bool)
    if truth.size == 0:
        return math.nan
    total = 0.0
    for label in (False, True):
        support = int(np.count_nonzero(truth == label))
        if support == 0:
            continue
        true_positives = int(np.count_nonzero((truth == label) & (predicted == label)))
        # 2TP / (|truth = c| + |predicted = c|): precision and recall's harmonic mean without 0/0.
        class_f1 = 2.0 * true_positives / (support + int(np.count_nonzero(predicted == label)))
        total += support * class_f1
    return total / truth.size


def _accuracy(truth: np.ndarray, predicted: np.ndarray) -> float:
    return float(np.mean(truth == predicted)) if truth.size else math.nan


def _clipped_class_accuracy(predictions: np.ndarray, labels: np.ndarray, bound: float) -> float:
    """Fraction whose rounded, clipped prediction equals the rounded, clipped label (half to even)."""
    return _accuracy(np.round(np.clip(predictions, -bound, bound)), np.round(np.clip(labels, -bound, bound)))


def pearson_r(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Pearson's r in float64; NaN when either array is constant (r is undefined)."""
    p = np.asarray(predictions, dtype=np.float64) - np.mean(predictions, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64) - np.mean(labels, dtype=np.float64)
    spread = math.sqrt(float(np.dot(p, p)) * float(np.dot(y, y)))
    if spread == 0.0:
        return math.nan
    return float(np.clip(np.dot(p, y) / spread, -1.0, 1.0))


def score_predictions(predictions: np.ndarray, labels: np.ndarray, name: str = "predictions") -> SentimentScores:
    """Every score of ``predictions`` against ``labels`` (both (N,), any float dtype; computed in
    float64). The conventions are the module docstring's.

    Args:
        predictions: the model's outputs for the N samples of a split.
        labels: their labels, in the same order.
        name: what an error calls the predictions (``run seed0, subset l,a``).

    Raises:
        SentimentEvaluationError: arrays that are not 1-D, differ in length, are empty, or hold
            NaN or infinite values.
    """
    p = np.asarray(predictions, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    if p.ndim != 1 or y.ndim != 1 or p.shape != y.shape:
        raise SentimentEvaluationError(f"{name}: predictions {p.shape} and labels {y.shape} must be two 1-D "
                                       f"arrays of the same length")
    if p.size == 0:
        raise SentimentEvaluationError(f"{name}: no samples to score")
    for what, values in (("predictions", p), ("labels", y)):
        bad = int(np.count_nonzero(~np.isfinite(values)))
        if bad:
            raise SentimentEvaluationError(f"{name}: {bad} of {values.size} {what} are NaN or infinite")
    nonzero = y != 0
    positive_non0, predicted_non0 = y[nonzero] > 0, p[nonzero] > 0
    nonnegative, predicted_has0 = y >= 0, p >= 0
    return SentimentScores(
        acc2_non0=_accuracy(positive_non0, predicted_non0),
        acc2_has0=_accuracy(nonnegative, predicted_has0),
        f1_non0=weighted_binary_f1(positive_non0, predicted_non0),
        f1_has0=weighted_binary_f1(nonnegative, predicted_has0),
        acc7=_clipped_class_accuracy(p, y, ACC7_BOUND),
        acc5=_clipped_class_accuracy(p, y, ACC5_BOUND),
        mae=float(np.mean(np.abs(p - y))),
        corr=pearson_r(p, y),
    )
