"""``mmrobust evaluate`` and ``mmrobust evaluate-folder``."""

from __future__ import annotations

import click

from mmseg_robust.cli.options import Choice, model_options, prediction_options, raw_option, resolve_model_dirs
from mmseg_robust.evaluation import DEFAULT_ET_MIN_VOXELS, PROTOCOLS

et_option = click.option(
    "--et-min-voxels", type=click.IntRange(min=0), default=DEFAULT_ET_MIN_VOXELS, show_default=True,
    help="Threshold of the post-processed tables: a predicted ET under it is relabelled NCR (0: raw tables only).")
penalty_option = click.option(
    "--hd95-empty-penalty", type=click.FloatRange(min=0), default=None,
    help="HD95 (mm) when exactly one mask is empty [default: the image's diagonal, 373.13 for 240x240x155 @ 1 mm].")
scoring_processes_option = click.option(
    "-np", "--num-processes", type=click.IntRange(min=0), default=2, show_default=True,
    help="Worker processes that score label maps (0: in the main process), overlapping prediction.")
output_option = click.option("-o", "--output", type=click.Path(file_okay=False), default=None,
                             help="Report folder [default: <model dir>/evaluation_<cases>].")


def _echo_report(report) -> None:
    from mmseg_robust.evaluation.summary import format_table

    summary = report.summary
    for table in summary.tables:
        if table.metric == "dice":
            click.echo(f"\n{table.title()}, {len(summary.cases)} case(s)\n{format_table(table)}")
    click.echo("\nHD95 tables and the conventions: " + ", ".join(str(p) for p in report.paths))


@click.command("evaluate")
@model_options
@click.option("--subsets", default="all", show_default=True,
              help="all, full, missing-K, or ';'-separated subsets: table names (~T1, 'T1,Fl.') or t1+flair.")
@click.option("--cases", "case_spec", default="val", show_default=True,
              help="val (the fold's validation cases), test (labelled cases in no fold) or a file of case IDs.")
@click.option("--protocol", type=Choice(PROTOCOLS), default="shared", show_default=True,
              help="shared: crop/normalise once from all modalities, leave the absent out of the fusion (the "
                   "papers'; one pass per modality for DS); per-subset: as `predict --modalities` would.")
@et_option
@penalty_option
@output_option
@scoring_processes_option
@prediction_options
@click.option("--overwrite", is_flag=True, help="Predict again instead of reusing the label maps on disk.")
@raw_option
@click.option("--preprocessed", type=click.Path(file_okay=False), default=None,
              help="Preprocessed base folder, for the split (default: $MMROBUST_PREPROCESSED).")
def evaluate_command(model_dirs, dataset, configuration, folds, strategy, model_kind, fusion, checkpoint, results,
                     subsets, case_spec, protocol, et_min_voxels, hd95_empty_penalty, output, num_processes, step,
                     sw_batch, tta, device, overwrite, raw, preprocessed):
    """Predict the evaluation cases under every modality subset and write the robustness report:
    per_case.csv, summary.md/.json (GMD Table 2 layout, Dice and HD95) and robustness.png."""
    from pathlib import Path

    from mmseg_robust.data.modality_subsets import select_subsets
    from mmseg_robust.evaluation.case_scoring import ScoringOptions
    from mmseg_robust.evaluation.cases import CASE_SETS, CaseSelectionError, dataset_cases
    from mmseg_robust.paths import data_folder, resolve_raw_dataset
    from mmseg_robust.runs.config import load_run_config, run_modalities

    model_dirs = resolve_model_dirs(model_dirs, dataset, configuration, folds, strategy, model_kind, fusion, results)
    config, _ = load_run_config(model_dirs[0])
    if case_spec == "val" and len(model_dirs) > 1:
        raise CaseSelectionError("--cases val is one fold's validation set; with several folds use --cases test "
                                 "or a file of case IDs")
    select_subsets(subsets, run_modalities(model_dirs[0]), name="--subsets")
    raw_root = resolve_raw_dataset(config.dataset, raw)
    splits = data_folder("preprocessed", preprocessed) / config.dataset / "splits.json"
    cases, description = dataset_cases(raw_root, splits, config.fold, case_spec)

    # Torch, the networks and the model only now that the cheap checks have passed.
    from mmseg_robust.evaluation.evaluate import evaluate_model
    from mmseg_robust.inference.predictor import PredictionSettings, Predictor

    predictor = Predictor.from_results(model_dirs, checkpoint, device)
    settings = PredictionSettings(step=step, sw_batch=sw_batch, tta=tta)
    name = case_spec if case_spec in CASE_SETS else Path(case_spec).stem
    out = Path(output) if output else model_dirs[0] / f"evaluation_{name}"
    report = evaluate_model(predictor, cases, out, subsets, settings, protocol,
                            ScoringOptions(et_min_voxels, hd95_empty_penalty), overwrite, description, num_processes)
    click.echo(f"{len(cases)} case(s) ({description}) x {len(report.summary.subsets)} subset(s) -> {out}")
    _echo_report(report)


@click.command("evaluate-folder")
@click.option("--pred", "prediction_dir", required=True, type=click.Path(file_okay=False),
              help="<case>.nii.gz label maps, or sub-folders of them named by subset (t1_flair, full).")
@click.option("--ref", "reference_dir", required=True, type=click.Path(file_okay=False),
              help="Reference label maps: <case>.nii.gz, <case>_seg.nii.gz or BraTS case folders.")
@click.option("--labels", type=Choice(["auto", "brats2018", "brats2023", "nnunet"]), default="auto",
              show_default=True, help="Label convention of both folders (auto: ET 4 -> brats2018, else brats2023).")
@click.option("--subset", "single_subset", default="Full", show_default=True,
              help="Column name when --pred holds the label maps directly.")
@et_option
@penalty_option
@click.option("-o", "--output", type=click.Path(file_okay=False), default=None,
              help="Report folder [default: <pred>/evaluation].")
@scoring_processes_option
def evaluate_folder_command(prediction_dir, reference_dir, labels, single_subset, et_min_voxels, hd95_empty_penalty,
                            output, num_processes):
    """Score label maps made by anything against references, into the same report as evaluate."""
    from pathlib import Path

    from mmseg_robust.evaluation.case_scoring import ScoringOptions
    from mmseg_robust.evaluation.folder import evaluate_folder

    out = Path(output) if output else Path(prediction_dir) / "evaluation"
    report = evaluate_folder(Path(prediction_dir), Path(reference_dir), out, labels, single_subset,
                             ScoringOptions(et_min_voxels, hd95_empty_penalty), num_processes)
    click.echo(f"{len(report.summary.cases)} case(s) x {len(report.summary.subsets)} subset(s) -> {out}")
    _echo_report(report)
