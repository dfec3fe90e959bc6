"""Modality names and aliases, and the label-to-region mapping."""

from __future__ import annotations

import pytest

from mmseg_robust.data import BRATS_2018, BRATS_2023, NNUNET_BRATS, parse_modality_list
from mmseg_robust.data.modalities import UnknownModalityError, canonical_modality


@pytest.mark.parametrize("alias, canonical", [
    ("FLAIR", "flair"), ("t2f", "flair"), ("T1n", "t1"), ("t1c", "t1ce"), ("T1Gd", "t1ce"),
    ("t1ce", "t1ce"), ("t2w", "t2"), ("T2", "t2")])
def test_aliases(alias, canonical):
    assert canonical_modality(alias) == canonical


def test_unknown_names():
    assert canonical_modality("dwi") is None
    with pytest.raises(UnknownModalityError, match="case_7: unknown modality 'adc'"):
        parse_modality_list("t1,adc", context="case_7")
    with pytest.raises(UnknownModalityError, match="no modality given"):
        parse_modality_list(" , ")


def test_parse_list_is_canonical_order_without_duplicates():
    assert parse_modality_list("T2W,flair,t1c,T1CE") == ("flair", "t1ce", "t2")
    assert parse_modality_list(["t1n"]) == ("t1",)


def test_regions_follow_each_convention():
    assert BRATS_2018.region_labels == {"WT": (1, 2, 4), "TC": (1, 4), "ET": (4,)}
    assert BRATS_2023.region_labels == {"WT": (1, 2, 3), "TC": (1, 3), "ET": (3,)}
    assert NNUNET_BRATS.region_labels == {"WT": (2, 1, 3), "TC": (2, 3), "ET": (3,)}
    assert BRATS_2018.allowed_values == {0, 1, 2, 4}
    assert type(BRATS_2023).from_dict(BRATS_2023.to_dict()) == BRATS_2023
