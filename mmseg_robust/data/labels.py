"""Label conventions of the BraTS releases and the three overlapping training regions WT/TC/ET."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any, Mapping

import numpy as np

from mmseg_robust.errors import DatasetError

#: Training targets: overlapping regions predicted as independent sigmoid channels.
REGIONS: tuple[str, ...] = ("WT", "TC", "ET")


@dataclass(frozen=True)
class LabelConvention:
    """Which integer encodes each tumour sub-region in a dataset's label maps.

    ``ncr`` is the necrotic / non-enhancing core, ``edema`` the peritumoral edema, ``et`` the
    enhancing tumour; 0 is background in every supported release.
    """

    name: str
    ncr: int
    edema: int
    et: int
    background: int = 0

    @property
    def allowed_values(self) -> frozenset[int]:
        return frozenset({self.background, self.ncr, self.edema, self.et})

    @property
    def region_labels(self) -> dict[str, tuple[int, ...]]:
        """Label values that make up each region: WT = all tumour, TC = core, ET = enhancing."""
        return {"WT": (self.ncr, self.edema, self.et), "TC": (self.ncr, self.et), "ET": (self.et,)}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "LabelConvention":
        return cls(name=str(data["name"]), ncr=int(data["ncr"]), edema=int(data["edema"]),
                   et=int(data["et"]), background=int(data.get("background", 0)))


#: BraTS 2018-2021: 1 NCR/NET, 2 ED, 4 ET.
BRATS_2018 = LabelConvention("brats2018", ncr=1, edema=2, et=4)
#: BraTS 2023+: ET is 3.
BRATS_2023 = LabelConvention("brats2023", ncr=1, edema=2, et=3)
#: nnU-Net's converted BraTS datasets (e.g. Dataset137_BraTS2021): 1 ED, 2 NCR, 3 ET.
NNUNET_BRATS = LabelConvention("nnunet", ncr=2, edema=1, et=3)


def _normalise_key(name: str) -> str:
    return re.sub(r"[^a-z]", "", name.lower())


def _as_values(value: Any) -> tuple[int, ...]:
    if isinstance(value, (list, tuple)):
        return tuple(int(v) for v in value)
    return (int(value),)


def _sub_region_role(key: str) -> str | None:
    """Map a normalised label name (``"nonenhancingtumor"``, ``"ed"``) to ncr/edema/et."""
    if key in {"ncr", "net", "ncrnet"} or "necro" in key or key.startswith("nonenhancing"):
        return "ncr"
    if key == "et" or "enhancing" in key:
        return "et"
    if key == "ed" or "edema" in key or "oedema" in key:
        return "edema"
    return None


def convention_from_nnunet_labels(labels: Mapping[str, Any], source: str) -> LabelConvention:
    """Derive the convention from an nnU-Net ``dataset.json`` ``labels`` entry.

    Accepts the region form nnU-Net uses for BraTS (``"whole tumor": [1, 2, 3]``, ``"tumor core":
    [2, 3]``, ``"enhancing tumor": [3]``) and the plain form (one integer per named sub-region).
    """
    keyed = {_normalise_key(k): _as_values(v) for k, v in labels.items()}
    regions = {"wholetumor": "WT", "wholetumour": "WT", "tumorcore": "TC", "tumourcore": "TC",
               "enhancingtumor": "ET", "enhancingtumour": "ET"}
    found = {regions[k]: set(v) for k, v in keyed.items() if k in regions}
    try:
        if len(found) == 3:
            et_set, tc_set, wt_set = found["ET"], found["TC"], found["WT"]
            (et,) = et_set
            (ncr,) = tc_set - et_set
            (edema,) = wt_set - tc_set
            return LabelConvention("nnunet", ncr=ncr, edema=edema, et=et)
        roles: dict[str, set[int]] = {"ncr": set(), "edema": set(), "et": set()}
        for key, values in keyed.items():
            role = _sub_region_role(key)
            if role is not None and len(values) == 1:
                roles[role].add(values[0])
        (et,), (edema,), (ncr,) = roles["et"], roles["edema"], roles["ncr"]
        return LabelConvention("nnunet", ncr=ncr, edema=edema, et=et)
    except (ValueError, KeyError, TypeError):
        raise DatasetError(
            f"{source}: cannot tell necrotic core, edema and enhancing tumour apart from its "
            f"'labels' {dict(labels)} (expected BraTS regions 'whole tumor'/'tumor core'/"
            f"'enhancing tumor' or labels named edema/necrosis/enhancing)") from None


#: Sub-region codes of preprocessed label maps, the same whatever the release's convention.
SUBREGION_CODES: dict[str, int] = {"ncr": 1, "edema": 2, "et": 3}


def label_to_subregions(label: np.ndarray, convention: LabelConvention) -> np.ndarray:
    """Map a label map in ``convention`` to sub-region codes (0 bg, 1 NCR, 2 ED, 3 ET), uint8.

    Values outside the convention raise ValueError (verification reports them first).
    """
    codes = np.zeros(label.shape, dtype=np.uint8)
    known = label == convention.background
    for name, code in SUBREGION_CODES.items():
        hit = label == getattr(convention, name)
        codes[hit] = code
        known |= hit
    if not np.all(known):
        raise ValueError(f"label values {sorted(set(np.unique(label[~known]).tolist()))} outside the "
                         f"{convention.name} convention")
    return codes


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
