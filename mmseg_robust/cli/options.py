"""Reusable click parameter types and options."""

from __future__ import annotations

import click

from mmseg_robust.choices import closest_choice


class Choice(click.Choice):
    """click's ``Choice`` whose error also names the choice a mistyped value most likely meant."""

    def convert(self, value, param, ctx):
        try:
            return super().convert(value, param, ctx)
        except click.BadParameter:
            near = closest_choice(value, [str(c) for c in self.choices])
            if near is None:
                raise
            self.fail(f"{value!r} is not one of {', '.join(map(str, self.choices))}; did you mean {near!r}?",
                      param, ctx)


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


class KeyValues(click.ParamType):
    """Comma-separated ``name=value`` pairs such as ``flair=0.2,t1=0.1`` -> ``{name: value}``."""

    def __init__(self, kind: type) -> None:
        self.kind = kind
        self.name = f"name={kind.__name__} pairs"

    def convert(self, value, param, ctx):
        if isinstance(value, dict):
            return value
        pairs = {}
        for item in str(value).split(","):
            key, sep, number = item.partition("=")
            try:
                pairs[key.strip().lower()] = self.kind(number)
            except ValueError:
                self.fail(f"{item!r} is not name={self.kind.__name__} (e.g. flair=0.2)", param, ctx)
            if not sep or not key.strip():
                self.fail(f"{item!r} is not name={self.kind.__name__} (e.g. flair=0.2)", param, ctx)
        return pairs


num_processes_option = click.option(
    "-np", "--num-processes", type=click.IntRange(min=1), default=1, show_default=True,
    help="Worker processes (one case per worker at a time).")
raw_option = click.option(
    "--raw", type=click.Path(file_okay=False), default=None,
    help="Raw data base folder (default: $MMROBUST_RAW).")


def label_4_option(command):
    """``--label-4 et|rc``: what label 4 means where the raw files cannot say
    (:func:`~mmseg_robust.data.labels.state_label_4`)."""
    from mmseg_robust.data.labels import LABEL_4_MEANINGS, LABEL_4_OPTION

    return click.option(
        LABEL_4_OPTION, "label_4", type=Choice(LABEL_4_MEANINGS), default=None,
        help="What label 4 means where the files cannot say: et (enhancing tumour, BraTS 2018-2021 labels) or "
             "rc (resection cavity, BraTS 2024 post-treatment; background for WT/TC/ET). Default: the layout "
             "decides (ET in BraTS 2018-2021 names; RC in BraTS 2023+ names whose labels also hold 3; "
             "nnU-Net: dataset.json).")(command)


def model_options(command):
    """``-m RESULTS_DIR`` (repeatable) or ``-d NAME -c CONFIG -f FOLD --strategy/--model``, the
    checkpoint and the results base: how ``predict`` and ``evaluate`` find their model."""
    from mmseg_robust.choices import DEFAULT_STRATEGY, FUSIONS, MODEL_KINDS, STRATEGIES
    from mmseg_robust.engine.run_folder import DEFAULT_FUSION
    from mmseg_robust.planners.plans import CONFIGURATION_NAMES

    decorators = [
        click.option("-m", "--model-dir", "model_dirs", multiple=True, type=click.Path(file_okay=False),
                     help="A training run's fold folder (repeat to average folds)."),
        click.option("-d", "--dataset", default=None, help="Dataset name, with -c and -f, instead of -m."),
        click.option("-c", "--configuration", type=Choice(CONFIGURATION_NAMES), default="3d_fullres",
                     show_default=True),
        click.option("-f", "--fold", "folds", type=click.IntRange(min=0), multiple=True,
                     help="Fold(s) to average (repeat: -f 0 -f 1); default 0."),
        click.option("--strategy", type=Choice(STRATEGIES), default=DEFAULT_STRATEGY, show_default=True,
                     help="Which run of the dataset (its results folder <configuration>__<strategy>)."),
        click.option("--model", "model_kind", type=Choice(MODEL_KINDS), default="ds", show_default=True),
        click.option("--fusion", type=Choice(FUSIONS), default=DEFAULT_FUSION, show_default=True,
                     help="Which run of the dataset: the DS fusion it trained with."),
        click.option("--checkpoint", type=Choice(["best", "latest"]), default="best", show_default=True),
        click.option("--results", type=click.Path(file_okay=False), default=None,
                     help="Results base folder for -d (default: $MMROBUST_RESULTS)."),
    ]
    for decorator in reversed(decorators):
        command = decorator(command)
    return command


#: How the command line names the parameters of :func:`mmseg_robust.runs.paths.resolve_run_folders`.
RUN_FOLDER_FLAGS = {"model_dirs": "-m RESULTS_DIR", "dataset/configuration/folds": "-d NAME -c CONFIG -f FOLD"}


def resolve_model_dirs(model_dirs, dataset, configuration, folds, strategy, model_kind, fusion, results) -> list:
    """The fold folders named by :func:`model_options`' flags
    (:func:`~mmseg_robust.runs.paths.resolve_run_folders`, its error in flags)."""
    from mmseg_robust.runs.paths import RunFolderError, resolve_run_folders

    try:
        return resolve_run_folders(model_dirs, dataset, configuration, folds, model_kind, strategy, fusion, results)
    except RunFolderError as error:
        message = str(error)
        for parameter, flag in RUN_FOLDER_FLAGS.items():
            message = message.replace(parameter, flag)
        raise RunFolderError(message) from None


def prediction_options(command):
    """Sliding-window flags shared by ``predict`` and ``evaluate``."""
    decorators = [
        click.option("--step", type=click.FloatRange(0, 1, min_open=True), default=0.5, show_default=True,
                     help="Window stride as a fraction of the patch."),
        click.option("--sw-batch", type=click.IntRange(min=1), default=2, show_default=True,
                     help="Windows per forward pass."),
        click.option("--tta/--no-tta", default=None,
                     help="Mirroring test-time augmentation [default: on with CUDA, off on the CPU]."),
        click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N."),
    ]
    for decorator in reversed(decorators):
        command = decorator(command)
    return command
