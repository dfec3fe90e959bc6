"""Predict one case under many modality subsets, for the robustness evaluation (docs/design.md §9).

Two protocols:

* ``shared`` (default, the protocol of RFNet, mmFormer and GMD): the case is cropped and
  z-scored once from every modality it has, and a subset leaves the others out of the fusion. The
  DS model's fused logits are a fixed linear combination of its branch logits (the mean, or the
  learned per-region weights), and sliding-window accumulation (Gaussian weights, mirroring) is
  linear, so one pass per modality gives every subset's logits exactly, fused from the
  accumulated maps: 4 branch passes per case instead of 32. A gated fusion (per-voxel weights)
  accumulates its numerator and denominator per modality instead, which add up the same way.
  Models without that property (early fusion) run once per subset. Either way the logits go through the predictor's own
  path (probabilities, input grid, label, write): :meth:`Predictor.export`.
* ``per-subset``: each subset is read, cropped and normalised from its own files alone, exactly
  as ``mmrobust predict --modalities`` does.

Label maps are written without ET post-processing (the scorer applies it), under
``<folder>/<subset slug>/<case>.nii.gz``; ``prediction_settings.json`` beside them records what
made them, so a rerun reuses them only when the settings agree.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mmseg_robust.atomic import write_json_atomic
from mmseg_robust.data.modality_subsets import select_subsets, subset_name, subset_slug
from mmseg_robust.evaluation import PROTOCOLS, EvaluationError
from mmseg_robust.inference.inputs import InputCase
from mmseg_robust.inference.predictor import PredictionSettings, Predictor, output_path

SETTINGS_FILE = "prediction_settings.json"
DIGEST_BLOCK = 1 << 20
#: What :func:`output_path` names a label map.
LABEL_SUFFIX = ".nii.gz"


@dataclass(frozen=True)
class EvaluationSubset:
    """One column of the robustness table: its table name, folder name and modalities."""

    name: str
    slug: str
    modalities: tuple[str, ...]


def evaluation_subsets(spec: str, modalities: Sequence[str]) -> list[EvaluationSubset]:
    """``--subsets`` resolved against the model's modalities, in the paper's column order."""
    return [EvaluationSubset(subset_name(s, modalities), subset_slug(s, modalities),
                             tuple(modalities[i] for i in s)) for s in select_subsets(spec, modalities)]


class PredictionStore:
    """``<folder>/<slug>/<case>.nii.gz``, guarded by the settings that made them."""

    def __init__(self, folder: Path, settings: dict[str, Any], overwrite: bool = False) -> None:
        self.folder = Path(folder)
        self.overwrite = overwrite
        path = self.folder / SETTINGS_FILE
        recorded = self._recorded(path, overwrite)
        if recorded is not None and recorded != settings:
            if not overwrite:
                changed = sorted(k for k in set(recorded) | set(settings) if recorded.get(k) != settings.get(k))
                raise EvaluationError(f"{self.folder}: predictions on disk were made with other settings "
                                      f"({', '.join(changed)} differ); use another -o or pass --overwrite")
            # An --overwrite with new settings may redo only some subsets; the others' label maps
            # would be reused later under the new settings, so they go before the record changes.
            self._remove_label_maps()
        write_json_atomic(path, settings)

    @staticmethod
    def _recorded(path: Path, overwrite: bool) -> dict[str, Any] | None:
        """The settings on disk; unreadable ones are an error, or with ``overwrite`` unknown ones."""
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            if overwrite:
                return {}
            raise EvaluationError(f"{path}: unreadable ({error}); delete it or pass --overwrite") from None

    def _remove_label_maps(self) -> None:
        for label_map in self.folder.glob(f"*/*{LABEL_SUFFIX}"):
            label_map.unlink()

    def path(self, subset: EvaluationSubset, case_id: str) -> Path:
        return output_path(self.folder / subset.slug, case_id)

    def missing(self, subsets: Sequence[EvaluationSubset], case_id: str) -> list[EvaluationSubset]:
        """Subsets still to predict for ``case_id`` (all of them with ``overwrite``)."""
        return [s for s in subsets if self.overwrite or not self.path(s, case_id).is_file()]


class SubsetPredictor:
    """Writes a case's label maps for a list of subsets through a :class:`Predictor`, raw: the
    scorer applies ET post-processing itself."""

    def __init__(self, predictor: Predictor, settings: PredictionSettings, protocol: str = "shared") -> None:
        if protocol not in PROTOCOLS:
            raise EvaluationError(f"--protocol {protocol!r}: one of {', '.join(PROTOCOLS)}")
        self.settings = settings.on(predictor.device)
        self.predictor, self.protocol = predictor, protocol
        self.shares_branch_passes = all(m.network.has_branches for m in predictor.models)

    def describe(self) -> dict[str, Any]:
        """What decides the predictions' voxels: reused ones must agree on all of it."""
        return {"checkpoints": {str(m.source): file_digest(m.source) for m in self.predictor.models},
                "configuration": self.predictor.plan.name, "protocol": self.protocol,
                "step": self.settings.step, "tta": self.settings.tta}

    def predict(self, case: InputCase, subsets: Sequence[EvaluationSubset],
                store: PredictionStore) -> dict[str, np.ndarray]:
        """Predict and write ``subsets`` of ``case``; returns the label maps by subset name."""
        if not subsets:
            return {}
        if self.protocol == "per-subset":
            return {s.name: self.predictor.predict_case(case, s.modalities, store.path(s, case.case_id).parent,
                                                        self.settings).label for s in subsets}
        return self._predict_shared(case, subsets, store)

    def _predict_shared(self, case: InputCase, subsets: Sequence[EvaluationSubset],
                        store: PredictionStore) -> dict[str, np.ndarray]:
        predictor = self.predictor
        needed = sorted({m for s in subsets for m in s.modalities}, key=predictor.modalities.index)
        case.select(needed, predictor.modalities)  # every modality of the subsets is there
        _, _, prepared = predictor.prepare(case)  # cropped and normalised from all the case has
        channels, _ = predictor.input_channels(prepared)
        branches = predictor.branch_logits(channels, needed, self.settings) if self.shares_branch_passes else []
        written = {}
        for subset in subsets:
            logits = (predictor.fuse_branches(branches, subset.modalities) if branches else
                      [predictor.model_logits(m, channels, subset.modalities, self.settings) for m in predictor.models])
            result = predictor.export(case.case_id, subset.modalities, predictor.mean_probabilities(logits), prepared,
                                      store.path(subset, case.case_id).parent, keep_probabilities=False)
            written[subset.name] = result.label
        return written


def file_digest(path: Path) -> str:
    """Short SHA-256 of a file: a retrained checkpoint under the same name is a different model."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(DIGEST_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()[:16]
