"""The robustness evaluation: metrics, scoring of every modality subset, the report (DESIGN §9).

The constants here are light to import, so the command line can show its defaults without
loading torch.
"""

#: BraTS practice (nnU-Net's and RFNet's evaluation): a predicted ET under 500 voxels is relabelled NCR.
DEFAULT_ET_MIN_VOXELS = 500
#: How the subsets of a case are predicted (see :mod:`mmseg_robust.evaluation.subset_prediction`).
PROTOCOLS: tuple[str, ...] = ("shared", "per-subset")
