"""Segmentation training (docs/design.md §7): the trainer (the engine's hooks for the DS U-Net),
patch loading and augmentation, validation, the memory guard, and the gradient-log figures."""
