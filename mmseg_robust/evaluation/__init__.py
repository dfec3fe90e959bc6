"""The robustness evaluation: metrics, scoring of every modality subset, the report (docs/design.md §9).

What is here is light to import: the command line shows its defaults, and scoring workers
start, without loading torch.
"""

from mmseg_robust.errors import MMRobustError

#: BraTS practice (nnU-Net's and RFNet's evaluation): a predicted ET under 500 voxels is relabelled NCR.
DEFAULT_ET_MIN_VOXELS = 500
#: Lesion-wise conventions (:mod:`mmseg_robust.evaluation.lesions`): the BraTS 2023 script's, the 2024+ package's.
LESION_CONVENTION_NAMES: tuple[str, ...] = ("brats2023", "brats2024")
DEFAULT_LESION_CONVENTION = "brats2023"
#: How the subsets of a case are predicted (see :mod:`mmseg_robust.evaluation.subset_prediction`).
PROTOCOLS: tuple[str, ...] = ("shared", "per-subset")


class EvaluationError(MMRobustError):
    """An evaluation that cannot run as asked."""
