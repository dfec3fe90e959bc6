"""The ``mmrobust`` command line: a thin click layer over the Python API.

Expected errors (:class:`~mmseg_robust.errors.MMRobustError`) become one ``Error: ...`` line and
exit status 1, never a traceback.
"""

from __future__ import annotations

import logging

import click

from mmseg_robust import __version__
from mmseg_robust.cli.data_commands import make_synthetic_command, verify_command
from mmseg_robust.cli.evaluate_commands import evaluate_command, evaluate_folder_command
from mmseg_robust.cli.plan_commands import (
    extract_fingerprint_command,
    plan_and_preprocess_command,
    plan_command,
    preprocess_command,
)
from mmseg_robust.cli.predict_commands import predict_command
from mmseg_robust.cli.sentiment_commands import sentiment_group
from mmseg_robust.cli.split_commands import splits_command
from mmseg_robust.cli.train_commands import plot_gradients_command, train_command
from mmseg_robust.errors import MMRobustError


class _ExpectedErrorGroup(click.Group):
    """Turns expected errors raised by any subcommand into a one-line click error."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except MMRobustError as error:
            raise click.ClickException(str(error)) from None


@click.group(cls=_ExpectedErrorGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="mmrobust")
@click.option("-v", "--verbose", is_flag=True, help="Log debugging detail.")
@click.option("-q", "--quiet", is_flag=True, help="Log warnings and errors only.")
def main(verbose: bool, quiet: bool) -> None:
    """mmrobust: brain-tumour segmentation that stays accurate when MRI sequences are missing."""
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s" if verbose else "%(message)s")


for command in (make_synthetic_command, verify_command, plan_and_preprocess_command, extract_fingerprint_command,
                plan_command, preprocess_command, train_command, plot_gradients_command, predict_command,
                evaluate_command, evaluate_folder_command, sentiment_group, splits_command):
    main.add_command(command)
