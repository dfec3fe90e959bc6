"""Label conventions of the BraTS releases and the three overlapping training regions WT/TC/ET."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any, Mapping

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
