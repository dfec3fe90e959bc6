"""``mmrobust sentiment``: CMU-MOSI / CMU-MOSEI feature sequences (docs/design.md §10).

The data commands import numpy only, so that ``verify`` answers in about a second; ``train`` and
``evaluate`` import torch only after their arguments have been checked.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from typing import Iterator

import click

from mmseg_robust.choices import AMP_MODES, FUSIONS, GMD_SCOPES, MODEL_KINDS, STRATEGIES
from mmseg_robust.cli.options import Choice, NumberTuple
from mmseg_robust.sentiment.dataset import DATASETS, FORMATS, MODALITIES, SPLITS
from mmseg_robust.sentiment.synthetic import DEFAULT_SIGNAL, SIGNALS


@click.group("sentiment")
def sentiment_group() -> None:
    """Multimodal sentiment (language, audio, vision) on CMU-MOSI / CMU-MOSEI features."""


@sentiment_group.command("make-synthetic")
@click.option("-o", "--output", type=click.Path(dir_okay=False), required=True, help="Pickle file to write.")
@click.option("--format", "file_format", type=Choice(FORMATS), default="mmsa", show_default=True,
              help="mmsa: MMSA's aligned_50/unaligned_50.pkl; mult: MulT/GMC's mosi_data/mosei_senti_data.pkl.")
@click.option("--dataset", type=Choice(DATASETS), default="mosi", show_default=True,
              help="Corpus to imitate: its feature sizes (audio 5/74, vision 20/35) and label grid.")
@click.option("--unaligned", is_flag=True, help="Audio and vision at their own frame rates (longer sequences).")
@click.option("--samples", type=NumberTuple(int, len(SPLITS)), default="120,40,60", show_default=True,
              metavar="TRAIN,VALID,TEST", help="Samples per split.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Random seed; the same seed gives the same bytes.")
@click.option("--signal", type=Choice(SIGNALS), default=DEFAULT_SIGNAL, show_default=True,
              help="graded: audio and vision each know a part of the sentiment that language does not (Full can "
                   "beat language); shared: every modality sees the same latent, audio and vision only weakly.")
@click.option("--overwrite", is_flag=True, help="Replace an existing file.")
def make_synthetic_command(output: str, file_format: str, dataset: str, unaligned: bool, samples: tuple,
                           seed: int, signal: str, overwrite: bool) -> None:
    """Write a synthetic MOSI/MOSEI feature pickle in the MMSA or MulT/GMC format."""
    from mmseg_robust.sentiment.synthetic import SyntheticSentimentSpec, make_synthetic_sentiment

    spec = SyntheticSentimentSpec(file_format, dataset, not unaligned, samples, seed, signal)
    path = make_synthetic_sentiment(output, spec, overwrite=overwrite)
    lengths = "/".join(str(spec.lengths[m]) for m in MODALITIES)
    click.echo(f"{path}: synthetic {dataset.upper()} in the {file_format} format, "
               f"{'aligned' if spec.aligned else 'unaligned'} (l/a/v time steps {lengths}), "
               f"{'/'.join(map(str, samples))} {'/'.join(SPLITS)} samples, seed {seed}, signal {signal}")


@sentiment_group.command("verify")
@click.option("--data", type=click.Path(dir_okay=False), required=True,
              help="MMSA (aligned_50.pkl, unaligned_50.pkl) or MulT/GMC (mosi_data.pkl, ...) pickle.")
def verify_command(data: str) -> None:
    """Check a sentiment pickle safely (no code in it runs) and summarise it.

    Exits non-zero with one line naming the file, split and key at the first problem.
    """
    from mmseg_robust.sentiment.verify import verify_sentiment_file

    click.echo(verify_sentiment_file(data)[1])


def _default(field: str):
    """A training setting's default, from the API (the one place defaults live)."""
    from mmseg_robust.sentiment.config import SentimentTrainingConfig

    return SentimentTrainingConfig.__dataclass_fields__[field].default


@contextmanager
def _naming_flags(command: click.Command) -> Iterator[None]:
    """Library errors name settings (``learning_rate``); say the command's flags (``--lr``)."""
    from mmseg_robust.errors import MMRobustError

    flags = {p.name: next(o for o in p.opts if o.startswith("--")) for p in command.params
             if any(o.startswith("--") for o in p.opts)}
    names = "|".join(re.escape(name) for name in sorted(flags, key=len, reverse=True))
    try:
        yield
    except MMRobustError as error:
        message = re.sub(rf"(?<![\w/.-])({names})(?![\w/.-])", lambda match: flags[match.group(1)], str(error))
        raise type(error)(message) from None


@sentiment_group.command("train")
@click.option("--data", type=click.Path(dir_okay=False), required=True, help="MMSA or MulT/GMC pickle.")
@click.option("-o", "--output", type=click.Path(file_okay=False), default=None,
              help="Run folder [default: $MMROBUST_RESULTS/sentiment/<data stem>__<model>__<strategy>/seed_<seed>].")
@click.option("--model", type=Choice(MODEL_KINDS), default=None,
              help=f"ds: Dynamic Sharing (per-modality encoders, shared backbone with per-modality norms); "
                   f"early_fusion: one Transformer on every modality's frames [default: {_default('model')}].")
@click.option("--strategy", type=Choice(STRATEGIES), default=None,
              help=f"Gradient strategy over the 7 subsets [default: {_default('strategy')}].")
@click.option("--fusion", type=Choice(FUSIONS), default=None,
              help="How the DS branches' scores combine (the segmentation network's fusions): mean, weighted "
                   "(learned per-modality weights), gated (per-sample weights from each branch's features) "
                   "[default: weighted for ds, mean for early_fusion].")
@click.option("--modalities", default=None, metavar="M1,M2",
              help="Train a dedicated model on these modalities only (l, a, v or text, audio, vision), e.g. a,v "
                   "[default: all three].")
@click.option("--subsets", default=None, help=f"all | k=N | missing-1|2 | full [default: {_default('subsets')}].")
@click.option("--gmd-scope", "gmd_scope", type=Choice(GMD_SCOPES), default=None,
              help=f"[default: {_default('gmd_scope')}]")
@click.option("--cggm-rho", "cggm_rho", type=float, default=None,
              help=f"rho of CGGM's B [default: {_default('cggm_rho')}, CGGM's MOSI value].")
@click.option("--cggm-lambda", "cggm_lambda", type=float, default=None,
              help=f"Weight of CGGM's direction loss [default: {_default('cggm_lambda')}, CGGM's MOSI value].")
@click.option("--diagnostics", "diagnostics_every", type=click.IntRange(min=0), default=None,
              help="plain/cggm: log per-subset gradients every N steps (GMD logs them every step).")
@click.option("--epochs", type=int, default=None, help=f"[default: {_default('epochs')}]")
@click.option("--batch-size", "batch_size", type=int, default=None, help=f"[default: {_default('batch_size')}]")
@click.option("--lr", "learning_rate", type=float, default=None,
              help=f"Adam's learning rate, poly decay [default: {_default('learning_rate')}].")
@click.option("--grad-clip", "grad_clip", type=float, default=None, help=f"[default: {_default('grad_clip')}]")
@click.option("--seed", type=int, default=None, help=f"[default: {_default('seed')}]")
@click.option("--device", default=None, help="auto, cpu, cuda or cuda:N [default: auto].")
@click.option("--amp", type=Choice(AMP_MODES), default=None,
              help="auto: bf16 on CUDA if supported else fp16; off on the CPU [default: auto].")
@click.option("--resume", is_flag=True, help="Continue the run in the folder exactly (a larger --epochs extends it).")
@click.pass_context
def train_command(ctx: click.Context, data: str, output: str | None, resume: bool, **options) -> None:
    """Train a sentiment model on the train split; the best checkpoint is chosen on valid.

    Options not given take the defaults, or with --resume the stored run's values.
    """
    from mmseg_robust.sentiment.config import resolve_sentiment_run

    changes = {name: value for name, value in options.items() if value is not None}
    with _naming_flags(ctx.command):
        config, folder = resolve_sentiment_run(changes, data, output, resume)
        # Torch and the trainer only now that the cheap checks have passed.
        from mmseg_robust.sentiment.training import train_sentiment

        result = train_sentiment(config, data, folder, resume=resume)
    every = list(result.last_val)[-1]  # the subset of all the model's modalities comes last
    scores = result.last_val[every]
    accuracy = 100 * (scores.get("acc2_non0") or float("nan"))
    click.echo(f"{result.output_dir}: {result.epochs_done} epochs, best validation MAE (mean of the "
               f"{len(result.last_val)} subsets) {result.best_val_mae:.4f}; last validation, {every}: MAE "
               f"{scores.get('mae', float('nan')):.4f}, Acc-2 non0 {accuracy:.1f}")


@sentiment_group.command("evaluate")
@click.option("-m", "--model-dir", "run_dirs", multiple=True, required=True, type=click.Path(file_okay=False),
              help="A sentiment run folder (repeat for seeds: mean ± std).")
@click.option("--data", type=click.Path(dir_okay=False), required=True, help="The pickle to score.")
@click.option("--split", type=Choice(SPLITS), default="test", show_default=True)
@click.option("-o", "--output", type=click.Path(file_okay=False), default=None,
              help="Report folder [default: <the runs' folder>/evaluation_<split>].")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.pass_context
def evaluate_command(ctx: click.Context, run_dirs: tuple[str, ...], data: str, split: str, output: str | None,
                     device: str) -> None:
    """Score runs on a split under each modality subset (GMD's Table 4 layout)."""
    from mmseg_robust.sentiment.evaluation import evaluate_sentiment_runs
    from mmseg_robust.sentiment.report_summary import format_table

    with _naming_flags(ctx.command):
        report = evaluate_sentiment_runs(run_dirs, data, split, output, device)
    click.echo(format_table(report.summary))
    click.echo("Wrote " + ", ".join(str(path) for path in report.files))
