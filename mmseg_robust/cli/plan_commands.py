"""``mmrobust extract_fingerprint | plan | preprocess | plan_and_preprocess`` (nnU-Net's steps)."""

from __future__ import annotations

from pathlib import Path

import click

from mmseg_robust.cli.options import Choice, NumberTuple, label_4_option, num_processes_option, raw_option
from mmseg_robust.planners.plans import CONFIGURATION_NAMES, IMAGE_DTYPES

dataset_option = click.option("-d", "--dataset", required=True, help="Dataset name under the raw folder, or a path.")
preprocessed_option = click.option("--preprocessed", type=click.Path(file_okay=False), default=None,
                                   help="Preprocessed base folder (default: $MMROBUST_PREPROCESSED).")
incomplete_option = click.option("--allow-incomplete", is_flag=True,
                                 help="Accept cases that lack a sequence; they keep the ones they have.")


def _verifying(command):
    """``--allow-incomplete`` and ``--label-4``: the options of the commands that verify the raw data."""
    return incomplete_option(label_4_option(command))
configurations_option = click.option(
    "-c", "--configurations", type=Choice(CONFIGURATION_NAMES), multiple=True,
    default=CONFIGURATION_NAMES, show_default=True, help="Configurations to plan/preprocess (repeat -c).")


def _stack(options):
    """One decorator applying ``options`` in the order they are listed."""
    def decorate(command):
        for option in reversed(options):
            command = option(command)
        return command
    return decorate


planning_options = _stack([
    click.option("--gpu-memory-gb", type=click.FloatRange(min=0, min_open=True), default=24.0,
                 show_default=True, help="GPU memory budget for patch and batch size."),
    click.option("--patch-size", type=str, default=None, metavar="D,H,W",
                 help="Override the patch size (D,H,W for 3d_fullres, H,W for 2d; only with one -c)."),
    click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Override the batch size."),
    click.option("--dtype", "image_dtype", type=Choice(IMAGE_DTYPES), default="float32",
                 show_default=True, help="Stored image dtype."),
    click.option("--base-features", type=click.IntRange(min=1), default=None,
                 help="Features of the first stage (default 32; doubling per stage, capped at 10x in 3D, 16x "
                      "in 2D); smaller for CPU runs."),
])
#: Overrides recorded in plans.json are applied again on a rerun; this flag drops them.
overwrite_plan_help = "plan from the defaults, dropping the overrides recorded in plans.json"


def _request(configurations, gpu_memory_gb, patch_size, batch_size, image_dtype, base_features):
    from mmseg_robust.planners.experiment_planner import PlanningRequest

    patch = None
    if patch_size is not None:
        if len(configurations) != 1:
            raise click.UsageError("--patch-size needs exactly one -c configuration")
        patch = NumberTuple(int, 3 if configurations[0] == "3d_fullres" else 2).convert(patch_size, None, None)
    return PlanningRequest(gpu_memory_gb=gpu_memory_gb, configurations=tuple(configurations), patch_size=patch,
                           batch_size=batch_size, image_dtype=image_dtype, base_features=base_features)


def _describe(outcome) -> None:
    plans = outcome.plans
    click.echo(f"target spacing {plans.target_spacing} (resample: {plans.resample}), median shape "
               f"{plans.median_shape}, {len(plans.modalities)} modality branches, budget {plans.gpu_memory_gb:g} GB")
    for config in plans.configurations.values():
        override = f" (overrides: {config.overrides.describe()})" if config.overrides else ""
        click.echo(f"  {config.name}: patch {config.patch_size}, batch {config.batch_size}, {config.n_stages} "
                   f"stages, features {config.features_per_stage}, ~{config.estimated_memory_gb:.1f} GB{override}")
    for note in outcome.recorded_overrides:
        if note.reapplied:
            click.echo(f"{note.configuration}: replanned with the overrides recorded in plans.json "
                       f"({note.overrides.describe()}; --overwrite plans from the defaults)")
        else:
            click.echo(f"{note.configuration}: --overwrite: planned from the defaults, dropping the recorded "
                       f"overrides ({note.overrides.describe()})")


@click.command("extract_fingerprint")
@dataset_option
@raw_option
@preprocessed_option
@_verifying
@num_processes_option
@click.option("--overwrite", is_flag=True, help="Recompute an existing fingerprint.json.")
def extract_fingerprint_command(dataset, raw, preprocessed, allow_incomplete, label_4, num_processes, overwrite):
    """Verify the raw dataset and write fingerprint.json."""
    from mmseg_robust import plan_and_preprocess as api

    location = api.DatasetLocation.resolve(dataset, raw, preprocessed)
    data = api.load_verified_dataset(location, allow_incomplete, num_processes, label_4=label_4)
    api.run_extract_fingerprint(location, data, num_processes, overwrite)
    click.echo(location.fingerprint_path)


@click.command("plan")
@dataset_option
@raw_option
@preprocessed_option
@configurations_option
@planning_options
@click.option("--overwrite", is_flag=True, help=overwrite_plan_help.capitalize() + ".")
def plan_command(dataset, raw, preprocessed, configurations, gpu_memory_gb, patch_size, batch_size, image_dtype,
                 base_features, overwrite):
    """Write plans.json from fingerprint.json (patch, batch and network per configuration)."""
    from mmseg_robust import plan_and_preprocess as api

    location = api.DatasetLocation.resolve(dataset, raw, preprocessed)
    outcome = api.run_plan(location, _request(configurations, gpu_memory_gb, patch_size, batch_size, image_dtype,
                                              base_features), overwrite)
    _describe(outcome)
    click.echo(location.plans_path)


def _user_splits(data, split_files, split_preset):
    """Check a user split (files or a preset) against the cases before any heavy work."""
    case_ids = [c.case_id for c in data.cases]
    if split_preset is not None:
        from mmseg_robust.data.split_presets import preset_splits

        return preset_splits(split_preset, case_ids)
    from mmseg_robust.data.splits import load_user_splits

    return load_user_splits([Path(p) for p in split_files], case_ids) if split_files else None


def _check_split_options(split_files, split_preset):
    if split_files and split_preset is not None:
        raise click.UsageError("--split-file and --split-preset exclude each other")


def _preprocess_and_split(api, location, data, configurations, num_processes, overwrite, user_splits, split_seed):
    summaries = api.run_preprocess(location, data, configurations, num_processes, overwrite)
    for identifier, summary in summaries.items():
        click.echo(f"{location.artifact(identifier)}: {summary.n_processed} cases preprocessed, "
                   f"{summary.n_skipped} already done")
    splits = api.ensure_splits(location, [c.case_id for c in data.cases], user_splits, split_seed)
    held_out = f", {len(splits.test)} held-out test cases" if splits.test else ""
    click.echo(f"{location.splits_path}: {splits.n_folds} fold(s){held_out}")


#: What preprocess and plan_and_preprocess both read: the dataset, its folders and configurations,
#: the verification's options and the worker count.
preprocessing_inputs = _stack([dataset_option, raw_option, preprocessed_option, configurations_option, _verifying,
                               num_processes_option])

with_split_options = _stack([
    click.option("--split-file", "split_files", type=click.Path(exists=True, dir_okay=False), multiple=True,
                 help="User split: a JSON file, or list files such as RFNet's train3.txt and test3.txt (repeat)."),
    click.option("--split-preset", default=None, metavar="NAME:N",
                 help="A published split, e.g. rfnet-brats2018:1 (train/val fold, test cases in no fold; "
                      "mmrobust splits --list)."),
    click.option("--split-seed", type=int, default=12345, show_default=True, help="Seed of the 5-fold split."),
])


@click.command("preprocess")
@preprocessing_inputs
@click.option("--overwrite", is_flag=True, help="Preprocess finished cases again.")
@with_split_options
def preprocess_command(dataset, raw, preprocessed, configurations, allow_incomplete, label_4, num_processes, overwrite,
                       split_files, split_preset, split_seed):
    """Crop, normalise, resample and store every case as plans.json says; write splits.json."""
    from mmseg_robust import plan_and_preprocess as api

    _check_split_options(split_files, split_preset)
    location = api.DatasetLocation.resolve(dataset, raw, preprocessed)
    data = api.load_verified_dataset(location, allow_incomplete, num_processes, label_4=label_4)
    user_splits = _user_splits(data, split_files, split_preset)
    _preprocess_and_split(api, location, data, configurations, num_processes, overwrite, user_splits, split_seed)


@click.command("plan_and_preprocess")
@preprocessing_inputs
@planning_options
@click.option("--overwrite", is_flag=True,
              help=f"Recompute the fingerprint, {overwrite_plan_help}, and preprocess finished cases again.")
@with_split_options
def plan_and_preprocess_command(dataset, raw, preprocessed, configurations, allow_incomplete, label_4, num_processes,
                                gpu_memory_gb, patch_size, batch_size, image_dtype, base_features, overwrite,
                                split_files, split_preset, split_seed):
    """Verify, fingerprint, plan and preprocess a raw dataset, and write its splits."""
    from mmseg_robust import plan_and_preprocess as api

    _check_split_options(split_files, split_preset)
    location = api.DatasetLocation.resolve(dataset, raw, preprocessed)
    request = _request(configurations, gpu_memory_gb, patch_size, batch_size, image_dtype, base_features)
    data = api.load_verified_dataset(location, allow_incomplete, num_processes, label_4=label_4)
    user_splits = _user_splits(data, split_files, split_preset)
    api.run_extract_fingerprint(location, data, num_processes, overwrite)
    _describe(api.run_plan(location, request, overwrite))
    _preprocess_and_split(api, location, data, configurations, num_processes, overwrite, user_splits, split_seed)
