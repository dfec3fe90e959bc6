"""Modality subsets by name (DESIGN §6.1, §9): every non-empty subset, its name in GMD's
Table 2 (``Fl.``, ``T1,Fl.``, ``~T1``, ``Full``), the table's column order, and the evaluation's
``--subsets`` selection. Torch-free, so scoring workers and the command line load it fast."""

from __future__ import annotations

from itertools import combinations
from typing import Sequence

from mmseg_robust.data.modalities import MODALITY_SHORT_NAMES, parse_modality_list
from mmseg_robust.errors import MMRobustError


class SubsetSpecError(MMRobustError):
    """An unknown ``--subsets`` value."""


def nonempty_subsets(indices: Sequence[int]) -> list[tuple[int, ...]]:
    """Every non-empty subset of ``indices``, smallest first, each in ascending order."""
    items = sorted(indices)
    return [c for size in range(1, len(items) + 1) for c in combinations(items, size)]


#: Order of the modalities inside a subset's name and of the table's columns, as GMD's Table 2
#: writes them (``T1,Fl.``, ``T1c,T2``); modalities it does not know go last.
TABLE_MODALITY_ORDER: tuple[str, ...] = ("t1", "t1ce", "t2", "flair")


def _table_rank(modality: str) -> int:
    return TABLE_MODALITY_ORDER.index(modality) if modality in TABLE_MODALITY_ORDER else len(TABLE_MODALITY_ORDER)


def subset_name(subset: Sequence[int], modalities: Sequence[str]) -> str:
    """Name as in GMD's Table 2: ``Full``, ``~T1`` (all but one), else ``T1,Fl.`` (table order)."""
    if len(subset) == len(modalities):
        return "Full"
    short = [MODALITY_SHORT_NAMES.get(m, m) for m in modalities]
    if len(modalities) > 2 and len(subset) == len(modalities) - 1:
        (missing,) = set(range(len(modalities))) - set(subset)
        return f"~{short[missing]}"
    return ",".join(short[i] for i in sorted(subset, key=lambda i: _table_rank(modalities[i])))


def subset_slug(subset: Sequence[int], modalities: Sequence[str]) -> str:
    """File-system name of a subset: its modalities in table order, ``t1_flair``."""
    return "_".join(modalities[i] for i in sorted(subset, key=lambda i: _table_rank(modalities[i])))


def table_subsets(modalities: Sequence[str]) -> list[tuple[int, ...]]:
    """Every non-empty subset in the column order of GMD's Table 2: by size, and within a size by
    descending table rank (``Fl.``, ``T2``, ``T1c``, ``T1``, then ``T2,Fl.``, ``T1c,Fl.``, ...,
    ``~T1``, ``~T1c``, ``~T2``, ``~Fl.``, ``Full``)."""
    def key(subset: tuple[int, ...]) -> tuple:
        ranks = sorted(_table_rank(modalities[i]) for i in subset)
        return (len(subset), tuple(-r for r in ranks))
    return sorted(nonempty_subsets(range(len(modalities))), key=key)


def select_subsets(spec: str, modalities: Sequence[str]) -> list[tuple[int, ...]]:
    """The evaluation's ``--subsets``: ``all``, ``full``, ``missing-K``, or a ``;``-separated list
    whose items are table names (``~T1``, ``T1,Fl.``, ``Full``) or modality lists (``t1+flair``,
    ``t1,flair``); returned in table order, without duplicates."""
    everything = table_subsets(modalities)
    spec = spec.strip()
    if spec == "all":
        return everything
    if spec == "full":
        return [everything[-1]]
    if spec.startswith("missing-") and spec[len("missing-"):].isdigit():
        size = len(modalities) - int(spec[len("missing-"):])
        chosen = [s for s in everything if len(s) == size]
        if not chosen:
            raise SubsetSpecError(f"--subsets {spec!r}: {len(modalities)} modalities have no such subsets")
        return chosen
    by_name = {subset_name(s, modalities).lower(): s for s in everything}
    wanted: set[tuple[int, ...]] = set()
    for item in (part.strip() for part in spec.split(";")):
        if not item:
            continue
        subset = by_name.get(item.lower())
        if subset is None:
            try:
                names = parse_modality_list(item.replace("+", ","), f"--subsets item {item!r}")
            except MMRobustError as error:
                raise SubsetSpecError(f"{error}; items are separated by ';' and are table names such as "
                                      f"~T1 or T1,Fl. or modality lists such as t1+flair") from None
            unknown = [m for m in names if m not in modalities]
            if unknown:
                raise SubsetSpecError(f"--subsets item {item!r}: the model has no {', '.join(unknown)} "
                                      f"(it knows {', '.join(modalities)})")
            subset = tuple(sorted(modalities.index(m) for m in names))
        wanted.add(subset)
    if not wanted:
        raise SubsetSpecError(f"--subsets {spec!r}: no subset given")
    return [s for s in everything if s in wanted]
