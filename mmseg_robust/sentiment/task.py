"""Sentiment regression as the gradient strategies see it (:class:`~mmseg_robust.multimodal.MultimodalTask`):
one value per sample against the label in [-3, 3].

* Loss: L1 (mean absolute error) of the fused value over the samples that have a modality of the
  subset, as MulT, GMC and CGGM train on MOSI. CGGM's heads train with the same L1.
* Utilisation of a modality (CGGM's epsilon_m): its head's Acc-2 on the batch, as CGGM's released
  MOSI code measures it (``train_eval_senti``): the fraction of the head's samples with
  ``(p > 0) == (y > 0)``, every sample counted and zero labels negative. This is neither of the
  two Acc-2 the evaluation reports (docs/design.md §10); it is kept because it is what CGGM's
  rho 1.3 and lambda 0.2 were tuned with.
* Subsets are named as the columns of GMD's Table 4: ``l``, ``a``, ``v``, ``a,v``, ``l,a``,
  ``l,v``, ``Full``.
"""

from __future__ import annotations

from typing import Sequence

from torch import Tensor

from mmseg_robust.sentiment.report import table_subset_name


def l1_loss(prediction: Tensor, target: Tensor) -> Tensor:
    """Mean ``|prediction - target|`` in float32 (``prediction`` ``(n, 1)`` or ``(n,)``)."""
    return (prediction.reshape(-1).float() - target.float()).abs().mean()


def sign_agreement(prediction: Tensor, target: Tensor) -> float:
    """CGGM's training Acc-2: the fraction with ``(p > 0) == (y > 0)`` over every sample."""
    return float(((prediction.detach().reshape(-1) > 0) == (target > 0)).float().mean())


class SentimentTask:
    """Regression on [-3, 3]: L1 loss, the heads' batch Acc-2 as utilisation, Table 4 names."""

    def loss(self, outputs: Sequence[Tensor], target: Tensor, valid: Tensor | None = None) -> Tensor:
        """L1 of ``outputs[0]`` ``(B, 1)`` against ``target`` ``(B,)`` over the ``valid`` samples;
        an exact 0 that still depends on the outputs when no sample is valid."""
        prediction = outputs[0]
        if valid is not None:
            if not bool(valid.any()):
                return prediction.sum() * 0.0
            prediction, target = prediction[valid], target[valid]
        return l1_loss(prediction, target)

    def head_loss(self, output: Tensor, target: Tensor, rows: Tensor) -> Tensor:
        return l1_loss(output, target[rows])

    def utilisation(self, output: Tensor, target: Tensor, rows: Tensor) -> float:
        return sign_agreement(output, target[rows])

    def subset_name(self, subset: Sequence[int], modalities: Sequence[str]) -> str:
        return table_subset_name(modalities[i] for i in subset)
