"""``mmrobust splits``: write a published split (a packaged preset) as list files."""

from __future__ import annotations

import click


@click.command("splits")
@click.option("--preset", default=None, metavar="NAME", help="Split preset, e.g. rfnet-brats2018 (--list shows them).")
@click.option("--split", "number", type=int, default=None, metavar="N", help="Which split of the preset (1, 2, ...).")
@click.option("-o", "--output", type=click.Path(file_okay=False), default=None,
              help="Folder to write train<N>.txt, val<N>.txt and test<N>.txt into.")
@click.option("--overwrite", is_flag=True, help="Replace existing list files whose content differs.")
@click.option("--list", "show_list", is_flag=True, help="List the presets and exit.")
def splits_command(preset: str | None, number: int | None, output: str | None, overwrite: bool,
                   show_list: bool) -> None:
    """Write a published train/val/test split as list files for --split-file."""
    from mmseg_robust.data import split_presets as api

    if show_list:
        for item in api.list_presets():
            sizes = "/".join(map(str, item.sizes))
            click.echo(f"{item.name}: splits {item.numbers.start}-{item.numbers.stop - 1}, {sizes} "
                       f"train/val/test cases of the {item.dataset}; {item.description}")
        return
    missing = [flag for flag, value in (("--preset", preset), ("--split", number), ("-o", output)) if value is None]
    if missing:
        raise click.UsageError(f"missing {', '.join(missing)} (or --list)")
    split = api.read_preset_split(preset, number)
    written = api.write_preset_split(split, output, overwrite=overwrite)
    for item in written:
        click.echo(f"{item.path}: {item.n_cases} {item.role} cases ({item.status})")
    files = " ".join(f"--split-file {item.path}" for item in written)
    click.echo(f"use: mmrobust plan_and_preprocess -d NAME {files} (same as --split-preset {split.spec}); "
               f"test cases are in no fold")
