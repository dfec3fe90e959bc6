"""Names of the phantom's contrast variants, importable without the generator's heavy modules.

``all-sequences``: every sequence has its realistic contrast; the tumour core's shape leaks into
FLAIR and T2 (NCR is bright on T2, the enhancing rim sits near grey matter on FLAIR), so inside the
whole tumour a single threshold finds ET on T2 and no sequence dominates in practice.
``t1ce-only``: NCR, ET and NET are iso-intense with edema on FLAIR, T1 and T2, so only T1ce shows
the tumour core: the modality dominance of real BraTS (GMD paper, Table 1), with nothing to learn
it from elsewhere.
"""

CORE_CONTRASTS: tuple[str, ...] = ("all-sequences", "t1ce-only")
