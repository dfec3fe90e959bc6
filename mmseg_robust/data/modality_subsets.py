"""Modality subsets by name (docs/design.md §6.1, §9): every non-empty subset, its name in GMD's
Table 2 (``Fl.``, ``T1,Fl.``, ``~T1``, ``Full``), the table's column order, and the one grammar of
``--subsets`` that training and evaluation share. Torch-free, so scoring workers and the command
line load it fast.

``--subsets`` grammar (:func:`parse_subset_spec`), for M modalities:

* ``all``: every non-empty subset (2^M - 1);
* ``full``: the set of all M;
* ``missing-K``: the subsets lacking exactly K modalities (GMD's Table 5), 1 <= K <= M - 1; any
  other K is an error (``missing-0`` is ``full``; K >= M leaves no subset);
* training only, ``k=N`` (N >= 1): N subsets drawn per step from ``all`` (the paper's complexity fix);
* evaluation only, a ``;``-separated list of table names (``~T1``, ``T1,Fl.``, ``Full``) or
  modality lists (``t1+flair``, ``t1,flair``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import combinations
from typing import Sequence

from mmseg_robust.choices import closest_choice
from mmseg_robust.data.modalities import MODALITIES, MODALITY_SHORT_NAMES, parse_modality_list
from mmseg_robust.errors import MMRobustError

#: What a ``--subsets`` value is parsed for: a training step's family, or the evaluation's list.
TRAINING = "training"
EVALUATION = "evaluation"
_MISSING = re.compile(r"missing-(.*)")
_SAMPLED = re.compile(r"k=(\d+)")
#: K of ``missing-K`` offered as "did you mean" when the number of modalities is not known yet.
_MISSING_HINTS = 3


class SubsetSpecError(MMRobustError):
    """A ``--subsets`` value that the grammar or the modalities do not allow."""


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


def _missing_count(spec: str, count: str, n_modalities: int | None, name: str) -> int:
    """K of ``missing-K``, checked against the number of modalities when it is known."""
    if not (count.isascii() and count.isdigit()):
        raise SubsetSpecError(f"{name} {spec!r}: K of missing-K must be a whole number")
    _check_missing(spec, int(count), n_modalities, name)
    return int(count)


def _check_missing(spec: str, count: int, n_modalities: int | None, name: str) -> None:
    if n_modalities is None:
        if count < 1:
            raise SubsetSpecError(f"{name} {spec!r}: K of missing-K must be at least 1 ('full' misses none)")
        return
    if not 1 <= count <= n_modalities - 1:
        allowed = (f"missing-1 to missing-{n_modalities - 1}" if n_modalities > 2 else
                   "only missing-1" if n_modalities == 2 else "no missing-K")
        raise SubsetSpecError(f"{name} {spec!r}: {n_modalities} modalities allow {allowed}")


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


@dataclass(frozen=True)
class SubsetSpec:
    """A parsed ``--subsets`` value: ``form`` is ``all``, ``full``, ``missing`` (``count`` = K),
    ``sampled`` (``k=N``, ``count`` = N) or ``listed`` (``listed``: the subsets, resolved)."""

    text: str
    form: str
    count: int = 0
    listed: tuple[tuple[int, ...], ...] = ()

    def family(self, n_modalities: int) -> list[tuple[int, ...]]:
        """The subsets of modalities ``0 .. n_modalities - 1`` the value names, smallest first
        (``sampled``: all of them, which a training step draws from)."""
        everything = nonempty_subsets(range(n_modalities))
        if self.form in ("all", "sampled"):
            return everything
        if self.form == "full":
            return [everything[-1]]
        if self.form == "missing":
            return [s for s in everything if len(s) == n_modalities - self.count]
        return list(self.listed)


def parse_subset_spec(spec: str, modalities: Sequence[str] | None = None, use: str = TRAINING,
                      name: str = "subsets") -> SubsetSpec:
    """Parse a ``--subsets`` value (the module docstring's grammar) for ``use`` (``training``:
    ``k=N`` allowed; ``evaluation``: ``;``-lists allowed); the shared words parse identically.

    Args:
        spec: the value.
        modalities: the model's modalities; None checks what can be checked without them
            (training's command line, before the plans are read).
        use: :data:`TRAINING` or :data:`EVALUATION`.
        name: how errors name the value (a parameter; the command line passes its flag).

    Raises:
        SubsetSpecError: a value the grammar or the modalities do not allow (one line).
    """
    text = spec.strip()
    n_modalities = None if modalities is None else len(modalities)
    if text in ("all", "full"):
        return SubsetSpec(text, text)
    missing = _MISSING.fullmatch(text)
    if missing:
        return SubsetSpec(text, "missing", _missing_count(text, missing.group(1), n_modalities, name))
    sampled = _SAMPLED.fullmatch(text)
    if use == TRAINING:
        if sampled:
            if int(sampled.group(1)) < 1:
                raise SubsetSpecError(f"{name} {text!r}: N of k=N must be at least 1")
            return SubsetSpec(text, "sampled", int(sampled.group(1)))
        highest = n_modalities - 1 if n_modalities is not None else _MISSING_HINTS
        near = closest_choice(text, ["all", "full"] + [f"missing-{k}" for k in range(1, highest + 1)])
        hint = f"; did you mean {near!r}?" if near is not None else ""
        raise SubsetSpecError(f"{name} {text!r}: training takes all, full, missing-K or k=N "
                              f"(lists of subsets are for evaluation){hint}")
    if sampled:
        raise SubsetSpecError(f"{name} {text!r}: k=N draws subsets per training step; evaluation takes all, "
                              f"full, missing-K or a ';'-separated list of subsets")
    if modalities is None:
        raise ValueError("a list of subsets is resolved against the model's modalities; none given")
    return SubsetSpec(text, "listed", listed=_resolve_list(text, tuple(modalities), name))


def select_subsets(spec: str, modalities: Sequence[str], name: str = "subsets") -> list[tuple[int, ...]]:
    """The evaluation's ``--subsets`` (:func:`parse_subset_spec` with ``use="evaluation"``), in
    the column order of GMD's Table 2, without duplicates.

    Raises:
        SubsetSpecError: a value the grammar or the modalities do not allow.
    """
    wanted = set(parse_subset_spec(spec, modalities, EVALUATION, name).family(len(modalities)))
    return [s for s in table_subsets(modalities) if s in wanted]
