"""Modality subsets by name (docs/design.md §6.1, §9): a subset's name in GMD's Table 2 (``Fl.``,
``T1,Fl.``, ``~T1``, ``Full``), the table's column order, and the evaluation's lists of subsets
(``;``-separated table names such as ``~T1`` and ``T1,Fl.``, or modality lists such as
``t1+flair``). The grammar itself (``all``, ``full``, ``missing-K``, ``k=N``) is the core's
(:mod:`mmseg_robust.multimodal.subsets`); :func:`parse_subset_spec` here is it with the names
resolved. Torch-free, so scoring workers and the command line load it fast.
"""

from __future__ import annotations

from typing import Sequence

from mmseg_robust.data.modalities import MODALITIES, MODALITY_SHORT_NAMES, parse_modality_list
from mmseg_robust.errors import MMRobustError
from mmseg_robust.multimodal import subsets as core
from mmseg_robust.multimodal.subsets import EVALUATION, TRAINING, SubsetSpec, SubsetSpecError, nonempty_subsets

#: Order of the modalities inside a subset's name and of the table's columns, as GMD's Table 2
#: writes them (``T1,Fl.``, ``T1c,T2``); modalities it does not know go last.
TABLE_MODALITY_ORDER: tuple[str, ...] = ("t1", "t1ce", "t2", "flair")


def _table_rank(modality: str) -> int:
    return TABLE_MODALITY_ORDER.index(modality) if modality in TABLE_MODALITY_ORDER else len(TABLE_MODALITY_ORDER)


def subset_name(subset: Sequence[int], modalities: Sequence[str]) -> str:
    """Name as in GMD's Table 2: ``Full``, ``~T1`` (all but one), else ``T1,Fl.`` (table order).

    ``subset`` indexes ``modalities``. Names are absolute for MRI sequences: ``Full`` and ``~T1``
    count against all four, so a dedicated model of T1 and FLAIR names its pair ``T1,Fl.``, never
    ``Full``. Other modalities (none of the four) count against ``modalities``."""
    members = [modalities[i] for i in subset]
    universe = tuple(MODALITIES) if set(modalities) <= set(MODALITIES) else tuple(modalities)
    if set(members) == set(universe):
        return "Full"
    if len(universe) > 2 and len(members) == len(universe) - 1:
        (missing,) = set(universe) - set(members)
        return f"~{MODALITY_SHORT_NAMES.get(missing, missing)}"
    return ",".join(MODALITY_SHORT_NAMES.get(m, m) for m in sorted(members, key=_table_rank))


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


def _resolve_list(spec: str, modalities: Sequence[str], name: str) -> tuple[tuple[int, ...], ...]:
    everything = nonempty_subsets(range(len(modalities)))
    by_name = {subset_name(s, modalities).lower(): s for s in everything}
    wanted: set[tuple[int, ...]] = set()
    for item in (part.strip() for part in spec.split(";")):
        if not item:
            continue
        subset = by_name.get(item.lower())
        if subset is None:
            try:
                names = parse_modality_list(item.replace("+", ","), f"{name} item {item!r}")
            except MMRobustError as error:
                raise SubsetSpecError(f"{error}; items are separated by ';' and are table names such as "
                                      f"~T1 or T1,Fl. or modality lists such as t1+flair") from None
            unknown = [m for m in names if m not in modalities]
            if unknown:
                raise SubsetSpecError(f"{name} item {item!r}: the model has no {', '.join(unknown)} "
                                      f"(it knows {', '.join(modalities)})")
            subset = tuple(sorted(modalities.index(m) for m in names))
        wanted.add(subset)
    if not wanted:
        raise SubsetSpecError(f"{name} {spec!r}: no subset given")
    return tuple(s for s in everything if s in wanted)


def parse_subset_spec(spec: str, modalities: Sequence[str] | None = None, use: str = TRAINING,
                      name: str = "subsets") -> SubsetSpec:
    """:func:`mmseg_robust.multimodal.subsets.parse_subset_spec` (same arguments) with evaluation
    lists of table names (``~T1``, ``T1,Fl.``) or modality lists (``t1+flair``) resolved.

    Raises:
        SubsetSpecError: a value the grammar or the modalities do not allow (one line).
    """
    return core.parse_subset_spec(spec, modalities, use, name, resolve_list=_resolve_list)


def select_subsets(spec: str, modalities: Sequence[str], name: str = "subsets") -> list[tuple[int, ...]]:
    """The evaluation's ``--subsets`` (:func:`parse_subset_spec` with ``use="evaluation"``), in
    the column order of GMD's Table 2, without duplicates.

    Raises:
        SubsetSpecError: a value the grammar or the modalities do not allow.
    """
    wanted = set(parse_subset_spec(spec, modalities, EVALUATION, name).family(len(modalities)))
    return [s for s in table_subsets(modalities) if s in wanted]
