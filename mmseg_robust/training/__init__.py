"""Training: data loading, subsets, precision, checkpoints, validation, the training loop."""
