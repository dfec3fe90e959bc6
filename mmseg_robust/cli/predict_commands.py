"""``mmrobust predict``."""

from __future__ import annotations

import click

from mmseg_robust.cli.options import model_options, prediction_options, resolve_model_dirs


@click.command("predict")
@click.option("-i", "--input", "input_path", required=True, type=click.Path(file_okay=False),
              help="A case folder, or a folder of case folders (any BraTS layout, nnU-Net _0000 files).")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False),
              help="Folder for <case>.nii.gz (created).")
@click.option("--modalities", default=None,
              help="Modalities to use, e.g. t1,flair (aliases accepted); default: every one found.")
@model_options
@prediction_options
@click.option("--et-min-voxels", type=click.IntRange(min=0), default=0, show_default=True,
              help="Relabel a predicted ET smaller than this as NCR (0: off).")
@click.option("--save-probabilities", is_flag=True, help="Also write <case>.npz with the region probabilities.")
@click.option("--png", is_flag=True, help="Also write <case>.png, a QC overlay of the central tumour slice.")
@click.option("--overwrite", is_flag=True, help="Predict cases whose output exists already.")
def predict_command(input_path, output, modalities, model_dirs, dataset, configuration, folds, strategy, model_kind,
                    fusion, checkpoint, step, sw_batch, tta, device, et_min_voxels, save_probabilities, png, overwrite,
                    results):
    """Segment WT/TC/ET from any subset of FLAIR, T1, T1ce, T2, in the input's geometry."""
    from pathlib import Path

    from mmseg_robust.inference.inputs import find_input_cases, parse_requested

    requested = parse_requested(modalities)
    model_dirs = resolve_model_dirs(model_dirs, dataset, configuration, folds, strategy, model_kind, fusion, results)
    cases = find_input_cases(input_path)

    # Torch, the networks and the model only now that the cheap checks have passed.
    from mmseg_robust.inference.predictor import OutputSettings, PredictionSettings, Predictor

    predictor = Predictor.from_results(model_dirs, checkpoint, device)
    summary = predictor.predict_cases(cases, requested, Path(output), PredictionSettings(step, sw_batch, tta),
                                      OutputSettings(et_min_voxels, save_probabilities, png), overwrite)
    used = ",".join(requested) if requested else "all found"
    failed = f" ({', '.join(summary.failed)})" if summary.failed else ""
    click.echo(f"{summary.predicted} predicted, {summary.skipped} skipped (output exists), {len(summary.failed)} "
               f"failed{failed}; modalities: {used}; -> {output}")
    if summary.failed:
        raise SystemExit(1)
