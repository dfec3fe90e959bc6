"""Inference (installed as ``mmseg_robust.inference``): ``mmrobust predict``'s sliding-window
prediction for any modality subset, test-time augmentation, and export to NIfTI in the input's
geometry. Entry point: :class:`mmseg_robust.inference.predictor.Predictor`."""
