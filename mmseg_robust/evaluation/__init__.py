"""Evaluation (DESIGN §9): per-case metrics for the WT/TC/ET regions."""
