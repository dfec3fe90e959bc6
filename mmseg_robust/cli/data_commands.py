"""``mmrobust make-synthetic`` and ``mmrobust verify``.

Heavy modules (scipy, matplotlib, later torch) are imported inside the commands that need them,
so that ``mmrobust --help`` and light commands start fast.
"""

from __future__ import annotations

import click

from mmseg_robust.cli.options import Choice, KeyValues, NumberTuple, label_4_option, num_processes_option, raw_option
from mmseg_robust.data.discovery import discover_dataset
from mmseg_robust.data.layouts import LAYOUT_NAMES
from mmseg_robust.data.synthetic.contrasts import CORE_CONTRASTS, GRADED_CORE_BETA
from mmseg_robust.data.verify import verify_dataset
from mmseg_robust.paths import resolve_raw_dataset


@click.command("make-synthetic")
@click.option("-o", "--output", type=click.Path(file_okay=False), required=True,
              help="Dataset folder to create (e.g. $MMROBUST_RAW/BraTS2018).")
@click.option("--layout", type=Choice(LAYOUT_NAMES), default="brats2018", show_default=True,
              help="Raw layout and file naming to imitate.")
@click.option("--cases", "n_cases", type=click.IntRange(min=1), default=20, show_default=True,
              help="Number of cases; every fourth is low grade (no enhancing tumour).")
@click.option("--shape", type=NumberTuple(int, 3), default="96,96,96", show_default=True, metavar="D,H,W",
              help="Array size D,H,W (z,y,x); BraTS's 240x240x155 NIfTI grid is 155,240,240.")
@click.option("--spacing", type=NumberTuple(float, 3), default="1,1,1", show_default=True, metavar="D,H,W",
              help="Voxel spacing in mm, in the same D,H,W order as --shape.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Random seed; the same seed gives the same bytes.")
@click.option("--incomplete-fraction", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Fraction of cases that lack one (random) sequence.")
@click.option("--core-contrast", type=Choice(CORE_CONTRASTS), default=CORE_CONTRASTS[0], show_default=True,
              help="t1ce-only: the tumour core (NCR, ET, NET) looks like edema on FLAIR, T1 and T2, so only "
                   "T1ce shows it (tests the fusion's dilution). graded: FLAIR, T2 and T1 show the core at a "
                   "fraction beta of T1ce's contrast-to-noise ratio (graded dominance: the robustness study's "
                   "data).")
@click.option("--core-beta", type=KeyValues(float), default=None, metavar="SEQ=BETA,...",
              help="graded only: beta per weak sequence, e.g. flair=0.2,t2=0.15,t1=0.1 (default "
                   + ",".join(f"{k}={v:g}" for k, v in GRADED_CORE_BETA.items()) + ").")
@click.option("--post-treatment", is_flag=True,
              help="BraTS 2024 GLI post-treatment labels: a resection cavity (label 4) beside each tumour "
                   "(--layout brats2023 or nnunet).")
@click.option("--overwrite", is_flag=True, help="Replace a synthetic dataset made with other parameters.")
@num_processes_option
@click.option("--preview", type=click.Path(dir_okay=False), default=None,
              help="Also write a PNG of the first case's central slices with its labels.")
def make_synthetic_command(output: str, layout: str, n_cases: int, shape: tuple, spacing: tuple,
                           seed: int, incomplete_fraction: float, core_contrast: str,
                           core_beta: dict[str, float] | None, post_treatment: bool, overwrite: bool,
                           num_processes: int, preview: str | None) -> None:
    """Write a synthetic BraTS-like dataset (real layout, NIfTI, tumour labels)."""
    from mmseg_robust.data.synthetic.writer import SyntheticSpec, make_synthetic_dataset

    spec = SyntheticSpec(layout=layout, n_cases=n_cases, shape=shape, spacing=spacing, seed=seed,
                         incomplete_fraction=incomplete_fraction, core_contrast=core_contrast, core_beta=core_beta,
                         post_treatment=post_treatment)
    root = make_synthetic_dataset(output, spec, overwrite=overwrite, num_processes=num_processes)
    click.echo(f"{root}: {n_cases} synthetic cases in the {layout} layout (seed {seed})")
    if preview:
        from mmseg_robust.data.nifti_io import read_image
        from mmseg_robust.visualization import save_case_overview

        case = discover_dataset(root).cases[0]
        images = {m: read_image(p)[0] for m, p in case.images.items()}
        label = read_image(case.label)[0] if case.label else None
        click.echo(save_case_overview(images, label, case.convention, preview, title=case.case_id))


@click.command("verify")
@click.option("-d", "--dataset", required=True, help="Dataset name under the raw folder, or a path.")
@raw_option
@click.option("--allow-incomplete", is_flag=True,
              help="Accept cases that lack a sequence (they train on the ones they have).")
@label_4_option
@num_processes_option
def verify_command(dataset: str, raw: str | None, allow_incomplete: bool, label_4: str | None,
                   num_processes: int) -> None:
    """Check a raw dataset: files, dimensions, geometry, finite voxels, labels, case IDs.

    Prints one line per problem and a summary; exits 0 only when the dataset is clean.
    """
    raw_dataset = discover_dataset(resolve_raw_dataset(dataset, raw), label_4)
    report = verify_dataset(raw_dataset, allow_incomplete=allow_incomplete, num_processes=num_processes)
    for problem in report.problems:
        click.echo(str(problem))
    click.echo(report.summary())
    if not report.ok:
        raise SystemExit(1)
