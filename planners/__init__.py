"""Experiment planning (installed as ``mmseg_robust.planners``): dataset fingerprints, plans
(target spacing, normalisation, patch/batch/network per configuration) and their dataclasses.

This stage arrives with ``mmrobust plan_and_preprocess``.
"""
