"""``Predictor``: trained model(s) -> label maps for any modality subset (docs/design.md §8).

Notebook use::

    predictor = Predictor.from_results([Path(".../3d_fullres__gmd+cggm/fold_0")])
    result = predictor.predict_case(find_input_cases("case_dir")[0], modalities=("t1", "flair"),
                                    output_dir=Path("out"))
    result.label, result.probabilities, result.paths
    summary = predictor.predict_cases(find_input_cases("cases_dir"), None, Path("out"))

One pipeline: a case is prepared (read, cropped, normalised), each model's sliding-window logits
come from the modalities used (or are fused from per-modality branch logits, as the evaluation's
shared pass does), the models' probabilities are averaged, and :meth:`Predictor.export` takes them
back to the input's grid, labels and writes them. :class:`PredictionSettings` is what changes the
probabilities, :class:`OutputSettings` what is made of them.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from mmseg_robust.inference.export import (
    REGION_THRESHOLD,
    probabilities_to_crop,
    regions_to_label,
    remove_small_et,
    to_input_grid,
    write_label,
    write_probabilities,
)
from mmseg_robust.inference.inputs import InputCase, InputError, check_model_modalities
from mmseg_robust.inference.sliding_window import WindowPredictor, sliding_window_predict, with_mirroring
from mmseg_robust.planners.plans import ConfigurationPlan, Plans
from mmseg_robust.preprocessing.preprocessor import PreparedImages, prepare_images, read_case_images
from tqdm import tqdm

from mmseg_robust.devices import resolve_device
from mmseg_robust.engine import checkpoint as ckpt
from mmseg_robust.errors import MMRobustError
from mmseg_robust.networks import build_network
from mmseg_robust.precision import make_precision
from mmseg_robust.runs.checkpoint import check_plan_signature, plan_signature
from mmseg_robust.runs.config import TrainingConfig, load_run_config
from mmseg_robust.visualization import save_case_overview

logger = logging.getLogger(__name__)

CHECKPOINTS = {"best": ckpt.BEST, "latest": ckpt.LATEST}


class ModelLoadError(MMRobustError):
    """A results folder or checkpoint that cannot serve predictions."""


@dataclass(frozen=True)
class PredictionSettings:
    """What the probabilities are computed with (what is made of them is :class:`OutputSettings`).

    Args:
        step: the sliding window's stride as a fraction of the patch (0.5: neighbouring windows
            overlap by half); smaller is slower.
        sw_batch: windows per forward pass (memory and speed).
        tta: mirroring test-time augmentation, the mean over the 8 (3D) or 4 (2D) mirrored copies;
            None: on with CUDA, off on the CPU (see :meth:`on`).
    """

    step: float = 0.5
    sw_batch: int = 2
    tta: bool | None = None

    def on(self, device: torch.device | str) -> "PredictionSettings":
        """These settings with ``tta`` decided for ``device``: mirroring multiplies the network's
        work by 8 in 3D (4 in 2D), which a GPU affords and a CPU does not, so None is on with CUDA
        only. An explicit True or False stays."""
        if self.tta is not None:
            return self
        return dataclasses.replace(self, tta=torch.device(device).type == "cuda")


@dataclass(frozen=True)
class OutputSettings:
    """What is made of the probabilities (thresholded at 0.5 per region in every case).

    Args:
        et_min_voxels: ET post-processing: a predicted enhancing tumour of fewer voxels in all is
            relabelled NCR (it stays tumour core); 0: off.
        save_probabilities: also write ``<case>.npz``, the float16 WT/TC/ET probabilities on the
            input's grid.
        png: also write ``<case>.png``, a QC overlay of the inputs and the label map.
    """

    et_min_voxels: int = 0
    save_probabilities: bool = False
    png: bool = False


@dataclass
class PredictionResult:
    """Arrays in the input's array order (z, y, x) and the files written; ``probabilities`` is
    None when :meth:`Predictor.export` was not asked for them."""

    case_id: str
    modalities: tuple[str, ...]
    label: np.ndarray
    probabilities: np.ndarray | None
    paths: list[Path] = field(default_factory=list)


@dataclass
class PredictionRunSummary:
    """What :meth:`Predictor.predict_cases` did: cases predicted, skipped (their label map existed)
    and failed (case ID -> its one-line error, in input order)."""

    predicted: int = 0
    skipped: int = 0
    failures: dict[str, str] = field(default_factory=dict)

    @property
    def failed(self) -> list[str]:
        return list(self.failures)


@dataclass
class LoadedModel:
    network: torch.nn.Module
    config: TrainingConfig
    plans: Plans
    plan: ConfigurationPlan
    source: Path


def load_model(results_dir: Path, checkpoint: str = "best", device: torch.device | str = "cpu") -> LoadedModel:
    """Rebuild a run's network from its ``config.json`` and load ``checkpoint_<best|latest>.pt``."""
    results_dir = Path(results_dir)
    config, plans = load_run_config(results_dir)
    plan = plans.configuration(config.configuration)
    path = results_dir / CHECKPOINTS[checkpoint]
    state = ckpt.load_checkpoint(path, device)
    check_plan_signature(state, plan_signature(plans, plan), path)
    network = build_network(config.model, plan, config.network_modalities(plans),
                            deep_supervision=config.deep_supervision, fusion=config.fusion)
    network.load_state_dict(state["model"])
    return LoadedModel(network.to(device).eval(), config, plans, plan, path)


class Predictor:
    """One or several trained folds of the same plans; their probabilities are averaged."""

    def __init__(self, models: Sequence[LoadedModel], device: torch.device | str = "cpu") -> None:
        if not models:
            raise ModelLoadError("no model to predict with")
        first = models[0]
        for other in models[1:]:
            if (other.plans.modalities, other.plan) != (first.plans.modalities, first.plan):
                raise ModelLoadError(f"{other.source}: other plans than {first.source}; folds to average must "
                                     f"share their plans")
            if other.network.modalities != first.network.modalities:
                raise ModelLoadError(f"{other.source}: trained on {', '.join(other.network.modalities)}, "
                                     f"{first.source} on {', '.join(first.network.modalities)}; folds to "
                                     f"average must share their sequences")
        self.models = list(models)
        self.device = torch.device(device)
        self.plans, self.plan = first.plans, first.plan
        # The sequences the network has branches for: the plans' or, for a dedicated model, its own.
        self.modalities = tuple(first.network.modalities)
        self.precision = make_precision("auto", self.device)

    @classmethod
    def from_results(cls, results_dirs: Sequence[Path], checkpoint: str = "best",
                     device: torch.device | str = "cpu") -> "Predictor":
        """Load the runs (fold folders) ``results_dirs``; ``device`` may be ``auto`` (CUDA when
        available).

        Args:
            results_dirs: run fold folders (``<results>/<dataset>/<run name>/fold_<f>``, see
                :func:`~mmseg_robust.runs.paths.run_folder`); the probabilities of several are
                averaged (nnU-Net's fold ensemble), so they must share their plans and sequences.
            checkpoint: ``best`` (``checkpoint_best.pt``) or ``latest`` (``checkpoint_latest.pt``).
            device: ``cpu``, ``cuda``, ``cuda:N``, ``auto``, or a :class:`torch.device`.

        Raises:
            DeviceError: a ``device`` this machine cannot give.
            TrainingConfigError: a folder without a readable ``config.json`` of ``mmrobust train``.
            PlansError: the run's plans are malformed or lack its configuration.
            CheckpointError: a missing or unreadable checkpoint, or one trained with other plans.
            ModelLoadError: no run, or runs of different plans or sequences.
        """
        device = resolve_device(str(device))
        return cls([load_model(Path(d), checkpoint, device) for d in results_dirs], device)

    # ----------------------------------------------------------------- network side
    def window_predictor(self, model: LoadedModel, modalities: Sequence[str], tta: bool,
                         per_branch: bool = False) -> WindowPredictor:
        """What the sliding window runs on each batch of windows ``(N, M, *patch)``: the maps
        ``(N, C, *patch)`` of ``model`` from ``modalities`` only (a DS network runs their branches
        and no other), the mean over mirrored copies with ``tta``. The maps are the logits, or for a
        gated fusion its numerator and denominator (``network.window_maps``); ``per_branch``: each
        modality's own maps, stacked ``(N, M * C, *patch)`` (``network.branch_window_maps``)."""
        available = torch.zeros((1, len(self.modalities)), dtype=torch.bool, device=self.device)
        available[0, [self.modalities.index(m) for m in modalities]] = True
        maps = model.network.branch_window_maps if per_branch else model.network.window_maps

        def predict(windows: torch.Tensor) -> torch.Tensor:
            rows = available.expand(windows.shape[0], -1)
            with torch.no_grad(), self.precision.autocast():
                return maps(windows, rows).float()
        return with_mirroring(predict, self.plan.spatial_dims) if tta else predict

    def input_channels(self, prepared: PreparedImages) -> tuple[torch.Tensor, tuple[str, ...]]:
        """The prepared images as the network's ``(M, *shape)`` input, absent modalities zero."""
        channels = torch.zeros((len(self.modalities),) + prepared.shape, dtype=torch.float32)
        for index, modality in enumerate(prepared.modalities):
            channels[self.modalities.index(modality)] = torch.from_numpy(
                np.ascontiguousarray(prepared.images[index], dtype=np.float32))
        return channels, tuple(prepared.modalities)

    def model_maps(self, model: LoadedModel, channels: torch.Tensor, modalities: Sequence[str],
                   settings: PredictionSettings, per_branch: bool = False) -> torch.Tensor:
        """Sliding-window accumulation ``(C, *shape)`` of one model's window maps from ``modalities``
        only (on the CPU): the logits, or a gated fusion's numerator and denominator (``per_branch``:
        every modality's own, ``(M * C, *shape)``)."""
        predict = self.window_predictor(model, modalities, settings.on(self.device).tta, per_branch)
        # A 2D plan's patch slides over (y, x) of every z slice, windows batched across slices.
        maps = sliding_window_predict(predict, channels, self.plan.patch_size, settings.step, settings.sw_batch,
                                      self.device)
        return maps.cpu()

    def model_logits(self, model: LoadedModel, channels: torch.Tensor, modalities: Sequence[str],
                     settings: PredictionSettings) -> torch.Tensor:
        """Sliding-window logits ``(R, *shape)`` of one model from ``modalities`` only (on the CPU)."""
        return model.network.maps_to_logits(self.model_maps(model, channels, modalities, settings))

    def branch_logits(self, channels: torch.Tensor, modalities: Sequence[str],
                      settings: PredictionSettings) -> list[dict[str, torch.Tensor]]:
        """Per model, every modality's own sliding-window maps (a DS network: that branch alone):
        its logits, or a gated fusion's numerator and denominator. One sliding window per model
        carries all the branches (``network.branch_window_maps``), as one prediction does."""
        result = []
        for model in self.models:
            maps = self.model_maps(model, channels, modalities, settings, per_branch=True)
            per_branch = maps.reshape((len(self.modalities), -1) + tuple(maps.shape[1:]))
            result.append({m: per_branch[self.modalities.index(m)] for m in modalities})
        return result

    def fuse_branches(self, branches: Sequence[Mapping[str, torch.Tensor]],
                      modalities: Sequence[str]) -> list[torch.Tensor]:
        """Per model, the logits from ``modalities`` fused from :meth:`branch_logits`. Exact for a
        network with branches: the mean and weighted fusions are linear in the branch logits, a
        gated fusion's numerator and denominator add over the modalities, and the sliding window's
        Gaussian weighting and mirroring are linear."""
        indices = [self.modalities.index(m) for m in modalities]
        return [model.network.fuse_maps([maps[m] for m in modalities], indices)
                for model, maps in zip(self.models, branches)]

    def mean_probabilities(self, logits: Sequence[torch.Tensor]) -> np.ndarray:
        """Mean over the models of the sigmoid of their logits, ``(R, *network grid)``."""
        total = None
        for model_logits in logits:
            probabilities = torch.sigmoid(model_logits)
            total = probabilities if total is None else total + probabilities
        return (total / len(logits)).numpy()

    def network_probabilities(self, prepared: PreparedImages, settings: PredictionSettings) -> np.ndarray:
        """Mean over the models of the sigmoid of the sliding-window logits, ``(R, *prepared.shape)``."""
        channels, present = self.input_channels(prepared)
        return self.mean_probabilities([self.model_logits(model, channels, present, settings) for model in self.models])

    # ----------------------------------------------------------------- one case
    def prepare(self, case: InputCase, modalities: Sequence[str] | None = None
                ) -> tuple[tuple[str, ...], list[np.ndarray], PreparedImages]:
        """Read ``modalities`` of ``case`` (default: every one found that the model knows) and
        crop, resample and normalise them as the plans say: (modalities, images read, prepared)."""
        chosen = case.select(modalities, self.modalities)
        raw, geometry = read_case_images(case.case_id, case.images, chosen)
        return chosen, raw, prepare_images(raw, chosen, geometry, self.plans, case_id=case.case_id)

    def export(self, case_id: str, modalities: Sequence[str], probabilities: np.ndarray, prepared: PreparedImages,
               output_dir: Path | None = None, output: OutputSettings = OutputSettings(),
               images: Mapping[str, np.ndarray] | None = None, keep_probabilities: bool = True) -> PredictionResult:
        """Network-grid ``probabilities`` -> the label map on the input's grid, and with
        ``output_dir`` its files, written atomically (the PNG needs ``images``, the input arrays).
        Thresholds and labels on the crop and uncrops the label alone: the input-grid probabilities
        are made only when kept or saved."""
        cropped = probabilities_to_crop(probabilities, prepared)
        regions = remove_small_et(cropped > REGION_THRESHOLD, output.et_min_voxels)
        label = to_input_grid(regions_to_label(regions, self.plans.label_convention), prepared)
        full = to_input_grid(cropped, prepared) if keep_probabilities or output.save_probabilities else None
        result = PredictionResult(case_id, tuple(modalities), label, full if keep_probabilities else None)
        if output_dir is not None:
            output_dir = Path(output_dir)
            output_dir.mkdir(parents=True, exist_ok=True)
            if output.save_probabilities:
                result.paths.append(write_probabilities(full, output_dir / f"{case_id}.npz"))
            if output.png:
                if images is None:
                    raise ValueError("a PNG overview needs the input images")
                result.paths.append(save_case_overview(images, label, self.plans.label_convention,
                                                       output_dir / f"{case_id}.png",
                                                       title=f"{case_id} from {', '.join(modalities)}"))
            # The label map goes last: its presence marks the case as finished for reruns.
            result.paths.append(write_label(label, prepared, output_path(output_dir, case_id)))
        return result

    def predict_case(self, case: InputCase, modalities: Sequence[str] | None = None,
                     output_dir: Path | None = None, settings: PredictionSettings = PredictionSettings(),
                     output: OutputSettings = OutputSettings()) -> PredictionResult:
        """Predict one case from ``modalities`` (default: every one found that the model knows);
        with ``output_dir`` write ``<case>.nii.gz`` (and the extras ``output`` asks for) atomically.

        The case is prepared by training's own code (crop, z-score inside the brain, resampling
        from the plans); a DS network runs only the branches of the chosen modalities.

        Args:
            case: one case's modality files, from
                :func:`~mmseg_robust.inference.inputs.find_input_cases`.
            modalities: canonical names of the sequences to use (``parse_requested`` turns aliases
                into them); None: every one the case has that the model knows.
            output_dir: where the label map (written last) and the extras go; None: nothing is
                written.
            settings: the sliding window's stride, windows per pass and mirroring.
            output: ET post-processing and the extra files.

        Returns:
            The label map on the input's grid, in its array order (z, y, x) and the label values of
            the training data (the plans'), the WT/TC/ET probabilities ``(3, z, y, x)``, and the
            paths written.

        Raises:
            InputError: a requested sequence the case lacks or the model was not trained with, or
                a case with none of the model's sequences.
            ImageReadError: an unreadable image.
            PreprocessingError: an image that is not 3D, has non-finite voxels or lies on another
                grid than the case's first image.
            DiskFullError: no space left for an output file.
        """
        chosen, raw, prepared = self.prepare(case, modalities)
        probabilities = self.network_probabilities(prepared, settings)
        logger.debug("case %s from %s: network grid %s, %d model(s)", case.case_id, ",".join(chosen),
                     prepared.shape, len(self.models))
        return self.export(case.case_id, chosen, probabilities, prepared, output_dir, output, dict(zip(chosen, raw)))

    # ----------------------------------------------------------------- a folder of cases
    def predict_cases(self, cases: Sequence[InputCase], modalities: Sequence[str] | None, output_dir: Path,
                      settings: PredictionSettings = PredictionSettings(), output: OutputSettings = OutputSettings(),
                      overwrite: bool = False, progress: bool = True) -> PredictionRunSummary:
        """Predict every case into ``output_dir`` as :meth:`predict_case` does. A case whose label
        map is there already is skipped unless ``overwrite`` (the label map is written last, so a
        case interrupted half-way is predicted again); a case that fails with an expected error is
        logged in one line naming it, and the others are still predicted.

        Args:
            cases: the cases, from :func:`~mmseg_robust.inference.inputs.find_input_cases`.
            modalities: as in :meth:`predict_case`, the same for every case; None: each case's own.
            output_dir: where each case's ``<case>.nii.gz`` and extras go.
            settings: the sliding window's stride, windows per pass and mirroring.
            output: ET post-processing and the extra files.
            overwrite: predict again the cases whose label map exists.
            progress: show a progress bar (from two cases on).

        Returns:
            How many cases were predicted and skipped, and the failed ones with their one-line
            errors (expected errors only, :class:`~mmseg_robust.errors.MMRobustError`: any other
            exception stops the loop).

        Raises:
            InputError: ``modalities`` names a sequence the model has no branch for (before any case).
        """
        if modalities is not None:
            check_model_modalities(modalities, self.modalities)
        settings = settings.on(self.device)
        summary = PredictionRunSummary()
        for case in tqdm(cases, desc="predict", unit="case", disable=not progress or len(cases) < 2):
            if not overwrite and output_path(output_dir, case.case_id).exists():
                summary.skipped += 1
                continue
            try:
                self.predict_case(case, modalities, output_dir, settings, output)
            except MMRobustError as error:
                message = _naming_case(error, case.case_id)
                summary.failures[case.case_id] = message
                logger.error("not predicted: %s", message)
            else:
                summary.predicted += 1
        return summary


def _naming_case(error: Exception, case_id: str) -> str:
    """The error's one line, prefixed with the case unless it names it already."""
    message = str(error)
    return message if message.startswith(f"case {case_id}:") else f"case {case_id}: {message}"


def output_path(output_dir: Path, case_id: str) -> Path:
    return Path(output_dir) / f"{case_id}.nii.gz"


__all__ = ["InputError", "LoadedModel", "ModelLoadError", "OutputSettings", "PredictionResult", "PredictionRunSummary",
           "PredictionSettings", "Predictor", "load_model", "output_path"]
