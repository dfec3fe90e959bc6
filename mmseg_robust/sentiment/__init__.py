"""Multimodal sentiment regression on CMU-MOSI / CMU-MOSEI feature sequences (docs/design.md §10).

The data modules are numpy-only (``safe_pickle``, ``formats``, ``dataset``, ``verify``,
``synthetic``): reading or checking a file never imports torch.
"""
