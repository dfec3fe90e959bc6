"""``mmrobust evaluate`` and ``mmrobust evaluate-folder``."""

from __future__ import annotations

import click

from mmseg_robust.cli.options import Choice, model_options, prediction_options, raw_option, resolve_model_dirs
from mmseg_robust.data.labels import NAMED_CONVENTIONS
from mmseg_robust.evaluation import (
    DEFAULT_ET_MIN_VOXELS,
    DEFAULT_LESION_CONVENTION,
    LESION_CONVENTION_NAMES,
    PROTOCOLS,
)

et_option = click.option(
    "--et-min-voxels", type=click.IntRange(min=0), default=DEFAULT_ET_MIN_VOXELS, show_default=True,
    help="Threshold of the post-processed tables: a predicted ET under it is relabelled NCR (0: raw tables only).")
penalty_option = click.option(
    "--hd95-empty-penalty", type=click.FloatRange(min=0), default=None,
    help="HD95 (mm) when exactly one mask is empty [default: the image's diagonal, 373.13 for 240x240x155 @ 1 mm].")
lesion_option = click.option(
    "--lesion-convention", type=Choice(LESION_CONVENTION_NAMES), default=DEFAULT_LESION_CONVENTION,
    show_default=True, help="Lesion-wise metrics: brats2023 (the 2023 challenge script: lesions merged within 3 "
                            "dilations, lesions <= 50 mm3 left out, false positives penalised) or brats2024 (the "
                            "BraTS package on panoptica: one-to-one matching, mean over matched lesions).")
scoring_processes_option = click.option(
    "-np", "--num-processes", type=click.IntRange(min=0), default=2, show_default=True,
    help="Worker processes that score label maps (0: in the main process).")
evaluate_processes_option = click.option(
    "-np", "--num-processes", type=click.IntRange(min=0), default=None,
    help="Worker processes that score label maps while the next case is predicted (0: in the main process) "
         "[default: 2, or 0 when a CPU with at most 2 cores also predicts: the workers would only slow it].")
output_option = click.option("-o", "--output", type=click.Path(file_okay=False), default=None,
                             help="Report folder [default: <model dir>/evaluation_<cases>].")


def _echo_report(report) -> None:
    from mmseg_robust.evaluation.summary import format_table

    summary = report.summary
    for table in summary.tables:
        if table.metric in ("dice", "lesion_dice") and not table.et_min_voxels:
            click.echo(f"\n{table.title()}, {len(summary.cases)} case(s)\n{format_table(table)}")
    convention = summary.settings.get("lesion_convention", "")
    click.echo(f"\nLesion-wise convention: {convention}. HD95, the post-processed tables and the conventions: "
               + ", ".join(str(p) for p in report.paths))


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
@lesion_option
@output_option
@evaluate_processes_option
@prediction_options
@click.option("--overwrite", is_flag=True, help="Predict again instead of reusing the label maps on disk.")
@click.option("--ensemble", is_flag=True,
              help="Average several runs (-m/-f given more than once) into one prediction. Without it each run "
                   "is scored on its own cases and -o gets the mean ± std over the runs.")
@raw_option
@click.option("--preprocessed", type=click.Path(file_okay=False), default=None,
              help="Preprocessed base folder, for the split (default: $MMROBUST_PREPROCESSED).")
def evaluate_command(model_dirs, dataset, configuration, folds, strategy, model_kind, fusion, checkpoint, results,
                     subsets, case_spec, protocol, et_min_voxels, hd95_empty_penalty, lesion_convention, output,
                     num_processes, step, sw_batch, tta, device, overwrite, ensemble, raw, preprocessed):
    """Predict the evaluation cases under every modality subset and write the robustness report:
    per_case.csv, summary.md/.json (GMD Table 2 layout, Dice and HD95, whole-volume and lesion-wise)
    and robustness.png; with several runs, each run's report and their mean ± std."""
    from pathlib import Path

    from mmseg_robust.data.modality_subsets import select_subsets
    from mmseg_robust.evaluation.case_scoring import ScoringOptions
    from mmseg_robust.evaluation.run_evaluation import combine_run_reports, plan_run_evaluation
    from mmseg_robust.runs.config import run_modalities

    model_dirs = resolve_model_dirs(model_dirs, dataset, configuration, folds, strategy, model_kind, fusion, results)
    for run in model_dirs:
        select_subsets(subsets, run_modalities(run), name="--subsets")
    options = ScoringOptions(et_min_voxels, hd95_empty_penalty, lesion_convention)
    planned = plan_run_evaluation(model_dirs, case_spec, output, ensemble, raw, preprocessed)

    # Torch, the networks and the model only now that the cheap checks have passed.
    from mmseg_robust.evaluation.evaluate import evaluate_model
    from mmseg_robust.inference.predictor import PredictionSettings, Predictor

    settings = PredictionSettings(step=step, sw_batch=sw_batch, tta=tta)
    for entry in planned:
        members = model_dirs if len(planned) == 1 else [entry.run]
        predictor = Predictor.from_results(members, checkpoint, device)
        report = evaluate_model(predictor, entry.cases, entry.output, subsets, settings, protocol, options,
                                overwrite, entry.description, num_processes)
        click.echo(f"{entry.run}: {len(entry.cases)} case(s) ({entry.description}) x "
                   f"{len(report.summary.subsets)} subset(s) -> {entry.output}")
        _echo_report(report)
    if len(planned) > 1:
        from mmseg_robust.evaluation.runs_summary import format_runs_table

        combined = combine_run_reports(planned, Path(output))
        for metric in ("dice", "lesion_dice"):
            table = combined.table(metric)
            click.echo(f"\nOver {len(planned)} runs (mean ± std, then each run), {table.title()}\n"
                       f"{format_runs_table(table, combined.runs)}")
        click.echo(f"\nEvery table over the runs: {Path(output)}")


@click.command("evaluate-folder")
@click.option("--pred", "prediction_dir", required=True, type=click.Path(file_okay=False),
              help="<case>.nii.gz label maps, or sub-folders of them named by subset (t1_flair, full).")
@click.option("--ref", "reference_dir", required=True, type=click.Path(file_okay=False),
              help="Reference label maps: <case>.nii.gz, <case>_seg.nii.gz or BraTS case folders.")
@click.option("--labels", type=Choice(["auto", *NAMED_CONVENTIONS]), default="auto", show_default=True,
              help="Label convention of both folders (auto: 4 and 3 -> brats2024-gli, 4 alone -> brats2018, else "
                   "brats2023). brats2024-gli scores the resection cavity (4) as its own region RC.")
@click.option("--subset", "single_subset", default="Full", show_default=True,
              help="Column name when --pred holds the label maps directly.")
@et_option
@penalty_option
@lesion_option
@click.option("-o", "--output", type=click.Path(file_okay=False), default=None,
              help="Report folder [default: <pred>/evaluation].")
@scoring_processes_option
def evaluate_folder_command(prediction_dir, reference_dir, labels, single_subset, et_min_voxels, hd95_empty_penalty,
                            lesion_convention, output, num_processes):
    """Score label maps made by anything against references, into the same report as evaluate."""
    from pathlib import Path

    from mmseg_robust.evaluation.case_scoring import ScoringOptions
    from mmseg_robust.evaluation.folder import evaluate_folder

    out = Path(output) if output else Path(prediction_dir) / "evaluation"
    report = evaluate_folder(Path(prediction_dir), Path(reference_dir), out, labels, single_subset,
                             ScoringOptions(et_min_voxels, hd95_empty_penalty, lesion_convention), num_processes)
    click.echo(f"{len(report.summary.cases)} case(s) x {len(report.summary.subsets)} subset(s) -> {out}")
    _echo_report(report)
