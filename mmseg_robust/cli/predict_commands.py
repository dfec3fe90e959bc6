"""``mmrobust predict``."""

from __future__ import annotations

import click

from mmseg_robust.planners.plans import CONFIGURATION_NAMES
from mmseg_robust.training.config import DEFAULT_STRATEGY, MODEL_KINDS, STRATEGIES


@click.command("predict")
@click.option("-i", "--input", "input_path", required=True, type=click.Path(file_okay=False),
              help="A case folder, or a folder of case folders (any BraTS layout, nnU-Net _0000 files).")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False),
              help="Folder for <case>.nii.gz (created).")
@click.option("--modalities", default=None,
              help="Modalities to use, e.g. t1,flair (aliases accepted); default: every one found.")
@click.option("-m", "--model-dir", "model_dirs", multiple=True, type=click.Path(file_okay=False),
              help="A training run's fold folder (repeat to average folds).")
@click.option("-d", "--dataset", default=None, help="Dataset name, with -c and -f, instead of -m.")
@click.option("-c", "--configuration", type=click.Choice(CONFIGURATION_NAMES), default="3d_fullres",
              show_default=True)
@click.option("-f", "--fold", "folds", type=click.IntRange(min=0), multiple=True,
              help="Fold(s) to average (repeat: -f 0 -f 1); default 0.")
@click.option("--strategy", type=click.Choice(STRATEGIES), default=DEFAULT_STRATEGY, show_default=True,
              help="Which run of the dataset (its results folder <configuration>__<strategy>).")
@click.option("--model", "model_kind", type=click.Choice(MODEL_KINDS), default="ds", show_default=True)
@click.option("--checkpoint", type=click.Choice(["best", "latest"]), default="best", show_default=True)
@click.option("--step", type=click.FloatRange(0, 1, min_open=True), default=0.5, show_default=True,
              help="Window stride as a fraction of the patch.")
@click.option("--sw-batch", type=click.IntRange(min=1), default=2, show_default=True,
              help="Windows per forward pass.")
@click.option("--tta/--no-tta", default=None, help="Mirroring test-time augmentation [default: on with CUDA, "
                                                   "off on the CPU].")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--et-min-voxels", type=click.IntRange(min=0), default=0, show_default=True,
              help="Relabel a predicted ET smaller than this as NCR (0: off).")
@click.option("--save-probabilities", is_flag=True, help="Also write <case>.npz with the region probabilities.")
@click.option("--png", is_flag=True, help="Also write <case>.png, a QC overlay of the central tumour slice.")
@click.option("--overwrite", is_flag=True, help="Predict cases whose output exists already.")
@click.option("--results", type=click.Path(file_okay=False), default=None,
              help="Results base folder for -d (default: $MMROBUST_RESULTS).")
def predict_command(input_path, output, modalities, model_dirs, dataset, configuration, folds, strategy, model_kind,
                    checkpoint, step, sw_batch, tta, device, et_min_voxels, save_probabilities, png, overwrite,
                    results):
    """Segment WT/TC/ET from any subset of FLAIR, T1, T1ce, T2, in the input's geometry."""
    from pathlib import Path

    from tqdm import tqdm

    from mmseg_robust.errors import MMRobustError
    from mmseg_robust.inference.inputs import find_input_cases, parse_requested
    from mmseg_robust.inference.predictor import ModelLoadError, PredictionSettings, Predictor, output_path
    from mmseg_robust.paths import data_folder
    from mmseg_robust.training.trainer import resolve_device

    requested = parse_requested(modalities)
    if model_dirs and dataset:
        raise ModelLoadError("give either -m RESULTS_DIR or -d NAME -c CONFIG -f FOLD, not both")
    if not model_dirs:
        if not dataset:
            raise ModelLoadError("no model: give -m RESULTS_DIR or -d NAME -c CONFIG -f FOLD")
        run = f"{configuration}__{strategy if model_kind == 'ds' else model_kind}"
        base = data_folder("results", results) / dataset / run
        model_dirs = [base / f"fold_{f}" for f in (folds or (0,))]
    cases = find_input_cases(input_path)
    torch_device = resolve_device(device)
    predictor = Predictor.from_results([Path(d) for d in model_dirs], checkpoint, torch_device)
    settings = PredictionSettings(step=step, sw_batch=sw_batch, tta=torch_device.type == "cuda" if tta is None else tta,
                                  et_min_voxels=et_min_voxels, save_probabilities=save_probabilities, png=png)
    out = Path(output)
    done, skipped, failed = 0, 0, []
    for case in tqdm(cases, desc="predict", unit="case", disable=len(cases) < 2):
        if output_path(out, case.case_id).exists() and not overwrite:
            skipped += 1
            continue
        try:
            predictor.predict_case(case, requested, out, settings)
            done += 1
        except MMRobustError as error:
            failed.append(case.case_id)
            click.echo(f"Error: {error}", err=True)
    used = ",".join(requested) if requested else "all found"
    click.echo(f"{done} predicted, {skipped} skipped (output exists), {len(failed)} failed; modalities: {used}; "
               f"-> {out}")
    if failed:
        raise SystemExit(1)
