"""Inference (installed as ``mmseg_robust.inference``): sliding-window prediction for any modality
subset, test-time augmentation, and export to NIfTI in the input's geometry.

This stage arrives with ``mmrobust predict``.
"""
