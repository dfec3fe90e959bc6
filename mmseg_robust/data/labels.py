"""Label conventions of the BraTS releases and the three overlapping training regions WT/TC/ET.

Label 4 means different things: enhancing tumour (ET) in BraTS 2018-2021, the resection cavity
(RC) in the post-treatment glioma data of BraTS 2024 (``BraTS-GLI-...`` names, ET is 3). The layout
decides where it can (:func:`resolve_label_4`); where the files cannot say, the user states it
(:func:`state_label_4`, ``--label-4 et|rc``). RC is no tumour: it is background for WT, TC and ET.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, replace
from typing import Any, Collection, Mapping, Sequence

import numpy as np

from mmseg_robust.errors import DatasetError

#: Training targets: overlapping regions predicted as independent sigmoid channels.
REGIONS: tuple[str, ...] = ("WT", "TC", "ET")


@dataclass(frozen=True)
class LabelConvention:
    """Which integer encodes each tumour sub-region in a dataset's label maps.

    ``ncr`` is the necrotic / non-enhancing core, ``edema`` the peritumoral edema, ``et`` the
    enhancing tumour; 0 is background in every supported release. ``rc`` is the resection cavity of
    post-treatment data (None: the convention has none); it belongs to no tumour region.
    """

    name: str
    ncr: int
    edema: int
    et: int
    background: int = 0
    rc: int | None = None

    @property
    def allowed_values(self) -> frozenset[int]:
        values = {self.background, self.ncr, self.edema, self.et}
        return frozenset(values if self.rc is None else values | {self.rc})

    @property
    def region_labels(self) -> dict[str, tuple[int, ...]]:
        """Label values that make up each region: WT = all tumour, TC = core, ET = enhancing."""
        return {"WT": (self.ncr, self.edema, self.et), "TC": (self.ncr, self.et), "ET": (self.et,)}

    def to_dict(self) -> dict[str, Any]:
        """Without ``rc`` when there is none, so artifacts of conventions without RC keep their bytes
        (and preprocessed data its signature)."""
        data = asdict(self)
        if self.rc is None:
            del data["rc"]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "LabelConvention":
        """Reads dicts written before ``rc`` existed as conventions without RC."""
        rc = data.get("rc")
        return cls(name=str(data["name"]), ncr=int(data["ncr"]), edema=int(data["edema"]),
                   et=int(data["et"]), background=int(data.get("background", 0)),
                   rc=None if rc is None else int(rc))


#: BraTS 2018-2021: 1 NCR/NET, 2 ED, 4 ET.
BRATS_2018 = LabelConvention("brats2018", ncr=1, edema=2, et=4)
#: BraTS 2023+: ET is 3.
BRATS_2023 = LabelConvention("brats2023", ncr=1, edema=2, et=3)
#: BraTS 2024 GLI (post-treatment): 1 NETC, 2 SNFH, 3 ET, 4 RC (resection cavity).
BRATS_2024_GLI = LabelConvention("brats2024-gli", ncr=1, edema=2, et=3, rc=4)
#: nnU-Net's converted BraTS datasets (e.g. Dataset137_BraTS2021): 1 ED, 2 NCR, 3 ET.
NNUNET_BRATS = LabelConvention("nnunet", ncr=2, edema=1, et=3)

#: The conventions by name (``--labels`` choices of tools that read label maps without a layout).
NAMED_CONVENTIONS: dict[str, LabelConvention] = {
    c.name: c for c in (BRATS_2018, BRATS_2023, BRATS_2024_GLI, NNUNET_BRATS)}

#: The label value whose meaning depends on the release, and what a user may state it is.
LABEL_4 = 4
LABEL_4_MEANINGS: tuple[str, ...] = ("et", "rc")
#: How a user states it on the command line, and in an nnU-Net ``dataset.json``.
LABEL_4_OPTION = "--label-4"
RC_LABEL_NAME = "resection cavity"
_LABEL_4_WORDS = {"et": "enhancing tumour", "rc": "the resection cavity"}


class LabelConventionError(DatasetError):
    """What label 4 means cannot be told, or a statement contradicts the dataset's files."""


def state_label_4(convention: LabelConvention, meaning: str, source: str) -> LabelConvention:
    """``convention`` with label 4 read as the user states: ``et`` or ``rc`` (resection cavity).

    A layout that already fixes 4 (ET in BraTS 2018-2021 names, ET or RC named in a ``dataset.json``)
    takes only the same statement; BraTS 2023+ names (ET 3) take either: ``rc`` gives
    :data:`BRATS_2024_GLI`, ``et`` the 2018-2021 values :data:`BRATS_2018`.

    Raises:
        LabelConventionError: one line naming ``source``: an unknown meaning or a contradiction.
    """
    if meaning not in LABEL_4_MEANINGS:
        raise LabelConventionError(f"{source}: {LABEL_4_OPTION} {meaning!r}: one of {', '.join(LABEL_4_MEANINGS)}")
    fixed = "et" if convention.et == LABEL_4 else "rc" if convention.rc == LABEL_4 else None
    if fixed == meaning:
        return convention
    if fixed is not None or LABEL_4 in convention.allowed_values:
        raise LabelConventionError(
            f"{source}: {LABEL_4_OPTION} {meaning} contradicts the {convention.name} labels, where 4 is "
            f"{_LABEL_4_WORDS.get(fixed or '', 'another sub-region')}; leave {LABEL_4_OPTION} out")
    if convention == BRATS_2023:
        return BRATS_2024_GLI if meaning == "rc" else BRATS_2018
    if meaning == "et":
        raise LabelConventionError(
            f"{source}: {LABEL_4_OPTION} et contradicts the {convention.name} labels, where ET is "
            f"{convention.et}; edit the dataset.json 'labels' instead")
    return replace(convention, rc=LABEL_4)


def resolve_label_4(convention: LabelConvention, values: Collection[int], where: str = "") -> LabelConvention:
    """The convention that reads label maps holding ``values`` (all cases' together).

    Unchanged when 4 already has a meaning (ET in BraTS 2018-2021 names; a statement; a
    ``dataset.json`` that names it) or when no map holds 4. BraTS 2023+ names whose maps hold 3 (ET)
    and 4: BraTS 2024 GLI, 4 is the resection cavity. Anything else is not guessed.

    Raises:
        LabelConventionError: 4 without a meaning; the message (no path: the caller names the file,
            ``where`` may say more, e.g. " in 3 cases") says how to state it.
    """
    if LABEL_4 in convention.allowed_values or LABEL_4 not in values:
        return convention
    if convention == BRATS_2023:
        if BRATS_2023.et in values:
            return BRATS_2024_GLI
        raise LabelConventionError(
            f"label 4{where} but no label 3 in any case: 4 is the resection cavity in BraTS 2024 "
            f"post-treatment labels (ET 3), enhancing tumour in BraTS 2018-2021 labels; state which "
            f"with {LABEL_4_OPTION} rc or {LABEL_4_OPTION} et")
    raise LabelConventionError(
        f"label values [4] outside the {convention.name} convention {sorted(convention.allowed_values)}{where}: "
        f"if 4 is the resection cavity, name it in dataset.json 'labels' (\"{RC_LABEL_NAME}\": 4) or pass "
        f"{LABEL_4_OPTION} rc")


def label_4_as_in(convention: LabelConvention, trained: LabelConvention) -> LabelConvention:
    """``convention`` (a dataset's, from its layout) with label 4 read as ``trained`` reads it, when
    ``trained`` is that convention with 4 decided (by verification or a statement): how a trained
    dataset's test cases are read as its training cases were. Otherwise ``convention`` unchanged."""
    for meaning in LABEL_4_MEANINGS:
        try:
            if state_label_4(convention, meaning, "") == trained:
                return trained
        except LabelConventionError:
            continue
    return convention


def _normalise_key(name: str) -> str:
    return re.sub(r"[^a-z]", "", name.lower())


def _as_values(value: Any) -> tuple[int, ...]:
    if isinstance(value, (list, tuple)):
        return tuple(int(v) for v in value)
    return (int(value),)


def _sub_region_role(key: str) -> str | None:
    """Map a normalised label name (``"nonenhancingtumor"``, ``"ed"``, BraTS 2024's ``"snfh"``,
    ``"resectioncavity"``) to ncr/edema/et/rc."""
    if key == "rc" or "resection" in key or "cavity" in key:
        return "rc"
    # Before "enhancing": BraTS 2024's "surrounding non-enhancing FLAIR hyperintensity" is edema.
    if key in {"ed", "snfh"} or "edema" in key or "oedema" in key or "hyperintens" in key:
        return "edema"
    if key in {"ncr", "net", "netc", "ncrnet"} or "necro" in key or key.startswith("nonenhancing"):
        return "ncr"
    if key == "et" or "enhancing" in key:
        return "et"
    return None


def convention_from_nnunet_labels(labels: Mapping[str, Any], source: str) -> LabelConvention:
    """Derive the convention from an nnU-Net ``dataset.json`` ``labels`` entry.

    Accepts the region form nnU-Net uses for BraTS (``"whole tumor": [1, 2, 3]``, ``"tumor core":
    [2, 3]``, ``"enhancing tumor": [3]``) and the plain form (one integer per named sub-region),
    either with an optional resection cavity (``"resection cavity": 4``, or BraTS 2024's ``"RC"``).
    """
    keyed = {_normalise_key(k): _as_values(v) for k, v in labels.items()}
    regions = {"wholetumor": "WT", "wholetumour": "WT", "tumorcore": "TC", "tumourcore": "TC",
               "enhancingtumor": "ET", "enhancingtumour": "ET"}
    found = {regions[k]: set(v) for k, v in keyed.items() if k in regions}
    try:
        roles: dict[str, set[int]] = {"ncr": set(), "edema": set(), "et": set(), "rc": set()}
        for key, values in keyed.items():
            role = _sub_region_role(key)
            if role is not None and len(values) == 1 and (len(found) < 3 or role == "rc"):
                roles[role].add(values[0])
        if len(roles["rc"]) > 1:
            raise ValueError("two resection cavities")
        rc = next(iter(roles["rc"]), None)
        if len(found) == 3:
            et_set, tc_set, wt_set = found["ET"], found["TC"], found["WT"]
            (et,) = et_set
            (ncr,) = tc_set - et_set
            (edema,) = wt_set - tc_set
        else:
            (et,), (edema,), (ncr,) = roles["et"], roles["edema"], roles["ncr"]
        if rc in (et, edema, ncr):
            raise ValueError("resection cavity shares a value with a tumour sub-region")
        return LabelConvention("nnunet", ncr=ncr, edema=edema, et=et, rc=rc)
    except (ValueError, KeyError, TypeError):
        raise DatasetError(
            f"{source}: cannot tell necrotic core, edema and enhancing tumour apart from its "
            f"'labels' {dict(labels)} (expected BraTS regions 'whole tumor'/'tumor core'/"
            f"'enhancing tumor' or labels named edema/necrosis/enhancing)") from None


#: Sub-region codes of preprocessed label maps, the same whatever the release's convention.
SUBREGION_CODES: dict[str, int] = {"ncr": 1, "edema": 2, "et": 3}


def label_to_subregions(label: np.ndarray, convention: LabelConvention) -> np.ndarray:
    """Map a label map in ``convention`` to sub-region codes (0 bg, 1 NCR, 2 ED, 3 ET), uint8.

    The resection cavity (``convention.rc``) is no tumour: it becomes background (0), so it is in
    none of WT/TC/ET (:func:`resection_cavity_mask` gives it on its own). Values outside the
    convention raise ValueError (verification reports them first).
    """
    codes = np.zeros(label.shape, dtype=np.uint8)
    known = label == convention.background
    if convention.rc is not None:
        known |= label == convention.rc
    for name, code in SUBREGION_CODES.items():
        hit = label == getattr(convention, name)
        codes[hit] = code
        known |= hit
    if not np.all(known):
        raise ValueError(f"label values {sorted(set(np.unique(label[~known]).tolist()))} outside the "
                         f"{convention.name} convention")
    return codes


def resection_cavity_mask(label: np.ndarray, convention: LabelConvention) -> np.ndarray | None:
    """Bool mask of the resection cavity in a label map in ``convention``; None when the convention
    has no resection cavity (an all-False mask when it has one and the map holds none)."""
    if convention.rc is None:
        return None
    return np.asarray(label) == convention.rc


def describe_resection_cavity(convention: LabelConvention, volumes_ml: Sequence[float], n_labelled: int) -> str:
    """One phrase for summaries: the convention, how many of ``n_labelled`` cases have a resection
    cavity, and their median and range in mL; empty when the convention has no resection cavity."""
    if convention.rc is None:
        return ""
    text = f"{convention.name} labels: resection cavity ({convention.rc}) in {len(volumes_ml)} of {n_labelled} cases"
    if volumes_ml:
        text += (f", median {float(np.median(volumes_ml)):.1f} mL "
                 f"({min(volumes_ml):.1f}-{max(volumes_ml):.1f})")
    return text


def subregions_to_label(codes: np.ndarray, convention: LabelConvention) -> np.ndarray:
    """Inverse of :func:`label_to_subregions`: sub-region codes back to the release's values."""
    lookup = np.zeros(max(SUBREGION_CODES.values()) + 1, dtype=np.uint8)
    for name, code in SUBREGION_CODES.items():
        lookup[code] = getattr(convention, name)
    return lookup[codes]


def subregions_to_regions(codes: np.ndarray) -> np.ndarray:
    """Sub-region codes -> bool array (3, ...) of the overlapping regions WT, TC, ET."""
    et = codes == SUBREGION_CODES["et"]
    tc = et | (codes == SUBREGION_CODES["ncr"])
    return np.stack([codes > 0, tc, et])


def regions_to_subregions(regions: np.ndarray) -> np.ndarray:
    """Bool regions (3, ...) WT, TC, ET -> sub-region codes; later regions overwrite earlier ones
    (WT -> edema, TC -> NCR, ET -> ET), as BraTS exports do."""
    codes = np.zeros(regions.shape[1:], dtype=np.uint8)
    codes[regions[0]] = SUBREGION_CODES["edema"]
    codes[regions[1]] = SUBREGION_CODES["ncr"]
    codes[regions[2]] = SUBREGION_CODES["et"]
    return codes
