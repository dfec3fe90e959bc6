"""A training run's folder, the artifact every later stage reads: where it lives (:mod:`.paths`),
its ``config.json`` (:mod:`.config`), what a resumed run may change (:mod:`.resume`) and its
checkpoints (:mod:`.checkpoint`).

Training writes it; prediction and evaluation read it. Keeping it out of ``training`` lets
``inference`` and ``evaluation`` load a model without importing the trainer.
"""
