"""Preprocessing (installed as ``mmseg_robust.preprocessing``): cropping to the brain, per-modality
normalisation, resampling, and storage of preprocessed cases.

This stage arrives with ``mmrobust plan_and_preprocess``.
"""
