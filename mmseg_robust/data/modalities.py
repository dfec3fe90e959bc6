"""Canonical MRI modality names, their aliases, and parsing of user-given modality lists."""

from __future__ import annotations

from typing import Iterable

from mmseg_robust.errors import MMRobustError

#: Canonical names in canonical order; every array and table in mmrobust uses this order.
MODALITIES: tuple[str, ...] = ("flair", "t1", "t1ce", "t2")

#: Aliases (lower case) accepted everywhere: BraTS 2023+ suffixes, nnU-Net channel names, common spellings.
MODALITY_ALIASES: dict[str, str] = {
    "flair": "flair", "t2f": "flair", "t2flair": "flair", "t2-flair": "flair",
    "t1": "t1", "t1n": "t1", "t1w": "t1", "native": "t1",
    "t1ce": "t1ce", "t1c": "t1ce", "t1gd": "t1ce", "t1-ce": "t1ce", "t1post": "t1ce",
    "t2": "t2", "t2w": "t2",
}

#: Short names used in tables (GMD paper, Table 2).
MODALITY_SHORT_NAMES: dict[str, str] = {"flair": "Fl.", "t1": "T1", "t1ce": "T1c", "t2": "T2"}


class UnknownModalityError(MMRobustError):
    """A name that is not a modality or one of its aliases."""


def canonical_modality(name: str) -> str | None:
    """Return the canonical modality for ``name`` (case-insensitive alias), or None if unknown."""
    return MODALITY_ALIASES.get(name.strip().lower())


def require_modality(name: str, context: str = "") -> str:
    """Like :func:`canonical_modality` but raise a one-line error naming ``context`` if unknown."""
    modality = canonical_modality(name)
    if modality is None:
        where = f"{context}: " if context else ""
        raise UnknownModalityError(
            f"{where}unknown modality {name!r} (expected one of {', '.join(MODALITIES)} "
            f"or an alias such as t2f, t1n, t1c, t2w)")
    return modality


def parse_modality_list(text: str | Iterable[str], context: str = "") -> tuple[str, ...]:
    """Parse ``"t1,FLAIR"`` (or an iterable of names) into canonical names in canonical order.

    Duplicates (``t1c,t1ce``) collapse; an empty list is an error.
    """
    names = text.split(",") if isinstance(text, str) else list(text)
    chosen = {require_modality(n, context) for n in names if n.strip()}
    if not chosen:
        where = f"{context}: " if context else ""
        raise UnknownModalityError(f"{where}no modality given")
    return sort_modalities(chosen)


def sort_modalities(modalities: Iterable[str]) -> tuple[str, ...]:
    """Sort canonical modality names into canonical order."""
    return tuple(m for m in MODALITIES if m in set(modalities))
