"""``mmrobust train``."""

from __future__ import annotations

import re
from contextlib import contextmanager
from typing import Iterator

import click

from mmseg_robust.choices import (
    AMP_MODES,
    CGGM_BALANCES,
    CGGM_DIRECTIONS,
    CGGM_MAGNITUDE_SCOPES,
    DEFAULT_STRATEGY,
    FUSIONS,
    GMD_CGGM_COMPOSITIONS,
    GMD_SCOPES,
    MODEL_KINDS,
    OPTIMIZERS,
    STRATEGIES,
)
from mmseg_robust.cli.options import Choice
from mmseg_robust.engine.run_folder import DEFAULT_FUSION, run_name
from mmseg_robust.planners.plans import CONFIGURATION_NAMES
from mmseg_robust.runs.config import TrainingConfig

#: CLI option name -> TrainingConfig field, for every option that sets one. It builds the config and
#: names parameters by their flags in messages.
OPTION_FIELDS = {
    "dataset": "dataset", "configuration": "configuration", "fold": "fold", "model": "model",
    "modalities": "modalities", "fusion": "fusion",
    "strategy": "strategy", "subsets": "subsets", "gmd_scope": "gmd_scope",
    "gmd_cggm_composition": "gmd_cggm_composition",
    "cggm_rho": "cggm_rho", "cggm_lambda": "cggm_lambda", "cggm_ema": "cggm_ema",
    "cggm_balance": "cggm_balance", "cggm_direction": "cggm_direction",
    "cggm_magnitude_scope": "cggm_magnitude_scope",
    "diagnostics": "diagnostics_every", "subset_ranking_weight": "subset_ranking_weight", "epochs": "epochs",
    "iters_per_epoch": "iters_per_epoch", "optimizer": "optimizer", "lr": "learning_rate",
    "weight_decay": "weight_decay", "grad_clip": "grad_clip", "amp": "amp", "device": "device",
    "compile_model": "compile", "deep_supervision": "deep_supervision", "num_workers": "num_workers",
    "seed": "seed", "oversample_foreground": "oversample_foreground", "val_patches_per_case": "val_patches_per_case",
}

def _default(field: str):
    """A config field's default: the config states it, the command shows it (never a copy)."""
    return TrainingConfig.__dataclass_fields__[field].default


#: Options that are keywords of ``train()`` under their own name, not config fields.
TRAIN_KEYWORDS = ("ignore_memory_check",)


def _flags(command: click.Command) -> dict[str, str]:
    """API parameter name -> the command's long flag (``learning_rate`` -> ``--lr``)."""
    names = {**OPTION_FIELDS, **{keyword: keyword for keyword in TRAIN_KEYWORDS}}
    return {names[param.name]: next(o for o in param.opts if o.startswith("--"))
            for param in command.params if param.name in names}


def _in_flags(message: str, command: click.Command) -> str:
    """``message`` with every parameter name that stands as a word (not inside a path) as its flag."""
    flags = _flags(command)
    names = "|".join(re.escape(name) for name in sorted(flags, key=len, reverse=True))
    return re.sub(rf"(?<![\w/.-])({names})(?![\w/.-])", lambda match: flags[match.group(1)], message)


@contextmanager
def _naming_flags(command: click.Command, *errors: type[Exception]) -> Iterator[None]:
    """Re-raise ``errors`` (library errors, which name parameters) with the command's flags."""
    try:
        yield
    except errors as error:
        raise type(error)(_in_flags(str(error), command)) from None


#: ``mmrobust train --help``. The run folder's name comes from :func:`~mmseg_robust.engine.run_folder.run_name`
#: itself (the rule training writes by), so the help cannot drift from it.
TRAIN_HELP = f"""Train the DS U-Net (or the early-fusion baseline) on one fold.

Results go to

\b
  $MMROBUST_RESULTS/<dataset>/{run_name("<configuration>", strategy="<strategy>", fusion="<fusion>")}/fold_<f>/

({run_name("3d_fullres")} with the defaults; no fusion part with --fusion mean;
{run_name("<configuration>", model="early_fusion")} for the baseline). With --resume,
options not given are the stored run's; a larger --epochs extends it. Multi-GPU or
multi-process: torchrun --nproc-per-node N -m mmseg_robust train ...
"""


@click.command("train", help=TRAIN_HELP)
@click.option("-d", "--dataset", required=True, help="Dataset name (its folder under the preprocessed folder).")
@click.option("-c", "--configuration", type=Choice(CONFIGURATION_NAMES), default="3d_fullres", show_default=True)
@click.option("-f", "--fold", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--model", type=Choice(MODEL_KINDS), default=_default("model"), show_default=True,
              help="ds: Dynamic-Sharing U-Net; early_fusion: one U-Net on the zero-filled 4-channel stack.")
@click.option("--modalities", default=None, metavar="LIST",
              help="Train a dedicated model of these sequences only (e.g. flair or t1,flair): the other "
                   "branches do not exist. Its run folder ends in __only-<sequences> [default: every "
                   "sequence of the plans].")
@click.option("--fusion", type=Choice(FUSIONS), default=None,
              help=f"DS: how the branch logits of a subset are combined [default: {DEFAULT_FUSION}]. mean: their "
                   "mean; weighted: learned per-region weights of each modality, softmax over the modalities "
                   "present; gated: per-voxel weights from each branch's own features, softmax over the "
                   "modalities present.")
@click.option("--strategy", type=Choice(STRATEGIES), default=None,
              help=f"Gradient strategy [default: {DEFAULT_STRATEGY}]. plain: mean "
                   "of the subset losses, one backward; gmd: conflict removal between subset gradients; cggm: "
                   "classifier-guided modulation; gmd+cggm: both.")
@click.option("--subsets", default=_default("subsets"), show_default=True, help="all | k=N | missing-1|2|3 | full.")
@click.option("--gmd-scope", type=Choice(GMD_SCOPES), default=_default("gmd_scope"), show_default=True,
              help="full: exact per-subset gradients; head: conflicts measured on the last decoder stage and "
                   "output layers, then one backward; output: on the 1x1 output layers only (cheapest).")
@click.option("--gmd-cggm-composition", type=Choice(GMD_CGGM_COMPOSITIONS), default=_default("gmd_cggm_composition"),
              show_default=True,
              help="gmd+cggm: apart: GMD resolves the subset gradients' own conflicts, CGGM's direction "
                   "gradient is added once; rows: it is added to every subset gradient first.")
@click.option("--cggm-rho", type=click.FloatRange(min=0, min_open=True), default=_default("cggm_rho"),
              show_default=True,
              help="rho of CGGM's balancing term B (Eq. 7).")
@click.option("--cggm-lambda", type=click.FloatRange(min=0), default=_default("cggm_lambda"), show_default=True,
              help="Weight of CGGM's direction loss L_gm.")
@click.option("--cggm-balance", type=Choice(CGGM_BALANCES), default=_default("cggm_balance"), show_default=True,
              help="What Eq. 7 divides: smoothed (this project's): each modality's improvement trend, "
                   "counted from 0 and within its noise (B follows the trend, not one batch); raw (the paper "
                   "and the released code, with this project's guard against degenerate ratios): the change "
                   "between two batches.")
@click.option("--cggm-ema", type=click.FloatRange(0, 1, max_open=True), default=_default("cggm_ema"), show_default=True,
              help="--cggm-balance smoothed: smoothing of the utilisation's level, trend and noise "
                   "(about 1/(1-x) steps each).")
@click.option("--cggm-direction", type=Choice(CGGM_DIRECTIONS), default=_default("cggm_direction"), show_default=True,
              help="L_gm: the output layer's gradient against the heads' (gradients: the paper's text, "
                   "Eq. 12), the output layer's weights against the heads' output weights, both of the previous "
                   "step, acting on the output layer only (weights: the released code), or against the "
                   "gradient of each DS branch's own loss at the same output layer (branches: this project's).")
@click.option("--cggm-magnitude-scope", type=Choice(CGGM_MAGNITUDE_SCOPES), default=_default("cggm_magnitude_scope"),
              show_default=True,
              help="What CGGM's B_m scales: branch (this project's): the backward of branch m's logits, so "
                   "modality m's own parameters and its share of the shared weights' gradient; modality (the "
                   "paper's Eq. 8, as released): the gradients of the parameters modality m owns only (stem, "
                   "its norms, its fusion scores), after the backward and before clipping.")
@click.option("--diagnostics", type=click.IntRange(min=0), default=_default("diagnostics_every"), show_default=True,
              help="plain/cggm: log per-subset gradient norms and cosines every N steps (one backward per "
                   "subset); GMD logs them every step for free. 0: off.")
@click.option("--subset-ranking-weight", type=click.FloatRange(min=0), default=_default("subset_ranking_weight"),
              show_default=True,
              help="plain: add W x the mean over nested subset pairs S < S' of max(0, L_S' - L_S) (L_S "
                   "detached): more sequences must not raise the loss. 0: off.")
@click.option("--epochs", type=click.IntRange(min=1), default=_default("epochs"), show_default=True)
@click.option("--iters-per-epoch", type=click.IntRange(min=1), default=_default("iters_per_epoch"), show_default=True)
@click.option("--optimizer", type=Choice(OPTIMIZERS), default=_default("optimizer"), show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=_default("learning_rate"), show_default=True)
@click.option("--weight-decay", type=click.FloatRange(min=0), default=_default("weight_decay"), show_default=True)
@click.option("--grad-clip", type=click.FloatRange(min=0, min_open=True), default=_default("grad_clip"),
              show_default=True)
@click.option("--amp", type=Choice(AMP_MODES), default=_default("amp"), show_default=True,
              help="auto: bf16 on CUDA if supported else fp16 + GradScaler; off on the CPU.")
@click.option("--device", default=_default("device"), show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--compile", "compile_model", is_flag=True, help="torch.compile the network.")
@click.option("--deep-supervision/--no-deep-supervision", default=_default("deep_supervision"), show_default=True)
@click.option("--num-workers", type=click.IntRange(min=0), default=_default("num_workers"), show_default=True,
              help="Data-augmentation worker processes (0: in the main process).")
@click.option("--seed", type=int, default=_default("seed"), show_default=True)
@click.option("--oversample-foreground", type=click.FloatRange(0, 1), default=_default("oversample_foreground"),
              show_default=True)
@click.option("--val-patches-per-case", type=click.IntRange(min=1), default=_default("val_patches_per_case"),
              show_default=True)
@click.option("--resume", is_flag=True,
              help="Continue the run in the results folder exactly where it stopped (a larger --epochs extends it).")
@click.option("--preprocessed", type=click.Path(file_okay=False), default=None,
              help="Preprocessed base folder (default: $MMROBUST_PREPROCESSED).")
@click.option("--results", type=click.Path(file_okay=False), default=None,
              help="Results base folder (default: $MMROBUST_RESULTS).")
@click.option("--ignore-memory-check", is_flag=True,
              help="Train even when the plan's memory estimate exceeds the device's free memory (RAM on the CPU).")
@click.pass_context
def train_command(ctx: click.Context, resume, preprocessed, results, ignore_memory_check, **options):
    """``mmrobust train``: its help is :data:`TRAIN_HELP`."""
    from mmseg_robust.data.modality_subsets import parse_subset_spec
    from mmseg_robust.engine.resume import RUNTIME_FIELDS, resume_config
    from mmseg_robust.paths import data_folder
    from mmseg_robust.runs.config import TrainingConfig, TrainingConfigError, load_run_config
    from mmseg_robust.runs.preflight import check_training_inputs

    values = {OPTION_FIELDS[option]: value for option, value in options.items()}
    values["subsets"] = parse_subset_spec(values["subsets"], name="--subsets").text
    given = {OPTION_FIELDS[option] for option in options
             if ctx.get_parameter_source(option) == click.core.ParameterSource.COMMANDLINE}
    with _naming_flags(ctx.command, TrainingConfigError):
        config = TrainingConfig(**values)
        results_root = data_folder("results", results)
        dataset_folder = data_folder("preprocessed", preprocessed) / config.dataset
        if resume:
            stored, _ = load_run_config(config.output_dir(results_root))
            # Runtime settings are this invocation's (their defaults included), not the stored run's.
            config = resume_config(stored, {field: value for field, value in values.items()
                                            if field in given or field in RUNTIME_FIELDS})
        check_training_inputs(config, dataset_folder, results_root, resume)

    # Torch and the trainer only now that the cheap checks have passed.
    from mmseg_robust.training.memory_guard import MemoryBudgetError
    from mmseg_robust.training.trainer import train

    with _naming_flags(ctx.command, TrainingConfigError, MemoryBudgetError):
        result = train(config, dataset_folder, results_root, resume=resume, ignore_memory_check=ignore_memory_check)
    # The subset of every sequence the network has is the last one validated (smallest first).
    name, full = next(reversed(result.last_val.items()), ("", {}))
    click.echo(f"{result.output_dir}: {result.epochs_done} epochs, best EMA mean Dice {result.best_ema:.4f}; "
               f"last validation, {name}: " + ", ".join(f"{k} {v:.3f}" for k, v in full.items()))


@click.command("plot-gradients")
@click.argument("results_dir", type=click.Path(exists=True, file_okay=False))
@click.option("-o", "--output", type=click.Path(file_okay=False), default=None,
              help="Folder for the PNGs (default: RESULTS_DIR).")
def plot_gradients_command(results_dir, output):
    """Draw a run's gradient diagnostics: GMD paper Figures 3 and 4 (and CGGM's B per modality).

    RESULTS_DIR is a training run's folder (.../<configuration>__<strategy>/fold_<f>, or a sentiment run's).
    """
    from pathlib import Path

    from mmseg_robust.runs.config import run_modalities
    from mmseg_robust.training.gradient_plots import plot_gradients

    result = plot_gradients(Path(results_dir), Path(output) if output else None, run_modalities(Path(results_dir)))
    click.echo(f"{result.steps} logged steps -> " + ", ".join(str(p) for p in result.paths))
