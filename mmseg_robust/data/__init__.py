"""Raw data: modality names, label conventions, dataset layouts, case discovery and verification."""

from mmseg_robust.data.case import Case, Problem
from mmseg_robust.data.discovery import RawDataset, discover_dataset
from mmseg_robust.data.labels import BRATS_2018, BRATS_2023, NNUNET_BRATS, REGIONS, LabelConvention
from mmseg_robust.data.modalities import MODALITIES, canonical_modality, parse_modality_list
from mmseg_robust.data.verify import VerificationReport, verify_case, verify_dataset

__all__ = [
    "BRATS_2018", "BRATS_2023", "Case", "LabelConvention", "MODALITIES", "NNUNET_BRATS", "Problem",
    "REGIONS", "RawDataset", "VerificationReport", "canonical_modality", "discover_dataset",
    "parse_modality_list", "verify_case", "verify_dataset",
]
