"""``mmrobust sentiment``: CMU-MOSI / CMU-MOSEI feature sequences (docs/design.md §10).

The data commands import numpy only, so that ``verify`` answers in about a second.
"""

from __future__ import annotations

import click

from mmseg_robust.cli.options import Choice, NumberTuple
from mmseg_robust.sentiment.dataset import DATASETS, FORMATS, MODALITIES, SPLITS


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
@click.option("--overwrite", is_flag=True, help="Replace an existing file.")
def make_synthetic_command(output: str, file_format: str, dataset: str, unaligned: bool, samples: tuple,
                           seed: int, overwrite: bool) -> None:
    """Write a synthetic MOSI/MOSEI feature pickle in the MMSA or MulT/GMC format."""
    from mmseg_robust.sentiment.synthetic import SyntheticSentimentSpec, make_synthetic_sentiment

    spec = SyntheticSentimentSpec(file_format, dataset, not unaligned, samples, seed)
    path = make_synthetic_sentiment(output, spec, overwrite=overwrite)
    lengths = "/".join(str(spec.lengths[m]) for m in MODALITIES)
    click.echo(f"{path}: synthetic {dataset.upper()} in the {file_format} format, "
               f"{'aligned' if spec.aligned else 'unaligned'} (l/a/v time steps {lengths}), "
               f"{'/'.join(map(str, samples))} {'/'.join(SPLITS)} samples, seed {seed}")


@sentiment_group.command("verify")
@click.option("--data", type=click.Path(dir_okay=False), required=True,
              help="MMSA (aligned_50.pkl, unaligned_50.pkl) or MulT/GMC (mosi_data.pkl, ...) pickle.")
def verify_command(data: str) -> None:
    """Check a sentiment pickle safely (no code in it runs) and summarise it.

    Exits non-zero with one line naming the file, split and key at the first problem.
    """
    from mmseg_robust.sentiment.verify import verify_sentiment_file

    click.echo(verify_sentiment_file(data)[1])
