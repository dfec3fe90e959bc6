"""Modality subsets of any model, by index: every non-empty subset, and the one grammar of
``--subsets`` that training and evaluation share (docs/design.md §6.1, §9). What subsets are
*called* (GMD's Table 2 names, MRI modality lists) is the application's: the segmentation's
:mod:`mmseg_robust.data.modality_subsets` resolves the evaluation's lists of names through
``resolve_list``. Torch-free, so scoring workers and the command line load it fast.

``--subsets`` grammar (:func:`parse_subset_spec`), for M modalities:

* ``all``: every non-empty subset (2^M - 1);
* ``full``: the set of all M;
* ``missing-K``: the subsets lacking exactly K modalities (GMD's Table 5), 1 <= K <= M - 1; any
  other K is an error (``missing-0`` is ``full``; K >= M leaves no subset);
* training only, ``k=N`` (N >= 1): N subsets drawn per step from ``all`` (the paper's complexity fix);
* evaluation only, a ``;``-separated list of subsets, resolved by the application.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import combinations
from typing import Callable, Sequence

from mmseg_robust.choices import closest_choice
from mmseg_robust.errors import MMRobustError

#: What a ``--subsets`` value is parsed for: a training step's family, or the evaluation's list.
TRAINING = "training"
EVALUATION = "evaluation"
_MISSING = re.compile(r"missing-(.*)")
_SAMPLED = re.compile(r"k=(\d+)")
#: K of ``missing-K`` offered as "did you mean" when the number of modalities is not known yet.
_MISSING_HINTS = 3

#: Resolves an evaluation list ``(value, modalities, name)`` to its subsets (the application's names).
ListResolver = Callable[[str, tuple[str, ...], str], tuple[tuple[int, ...], ...]]


class SubsetSpecError(MMRobustError):
    """A ``--subsets`` value that the grammar or the modalities do not allow."""


def nonempty_subsets(indices: Sequence[int]) -> list[tuple[int, ...]]:
    """Every non-empty subset of ``indices``, smallest first, each in ascending order."""
    items = sorted(indices)
    return [c for size in range(1, len(items) + 1) for c in combinations(items, size)]


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
                      name: str = "subsets", resolve_list: ListResolver | None = None) -> SubsetSpec:
    """Parse a ``--subsets`` value (the module docstring's grammar) for ``use`` (``training``:
    ``k=N`` allowed; ``evaluation``: ``;``-lists allowed); the shared words parse identically.

    Args:
        spec: the value.
        modalities: the model's modalities; None checks what can be checked without them
            (training's command line, before the plans are read).
        use: :data:`TRAINING` or :data:`EVALUATION`.
        name: how errors name the value (a parameter; the command line passes its flag).
        resolve_list: the application's reading of an evaluation list; None refuses lists.

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
    if resolve_list is None:
        raise SubsetSpecError(f"{name} {text!r}: takes all, full or missing-K here (no list of subsets)")
    return SubsetSpec(text, "listed", listed=resolve_list(text, tuple(modalities), name))
