"""Reusable click parameter types and options."""

from __future__ import annotations

import click


class NumberTuple(click.ParamType):
    """A comma-separated tuple such as ``96,96,96`` or ``1,1,2.5`` of a fixed length."""

    def __init__(self, kind: type, length: int) -> None:
        self.kind, self.length = kind, length
        self.name = f"{length} comma-separated {kind.__name__}s"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        try:
            parts = tuple(self.kind(v) for v in str(value).split(","))
        except ValueError:
            self.fail(f"{value!r} is not {self.name}", param, ctx)
        if len(parts) != self.length:
            self.fail(f"{value!r} has {len(parts)} values, expected {self.length}", param, ctx)
        return parts


num_processes_option = click.option(
    "-np", "--num-processes", type=click.IntRange(min=1), default=1, show_default=True,
    help="Worker processes (one case per worker at a time).")
raw_option = click.option(
    "--raw", type=click.Path(file_okay=False), default=None,
    help="Raw data base folder (default: $MMROBUST_RAW).")
