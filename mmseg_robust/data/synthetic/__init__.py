"""Embedded synthetic BraTS-like data: a phantom generator and a writer for every raw layout.

The generator's names load on first use (PEP 562), so that the CLI can import the light
``contrasts`` module without scipy.
"""

from importlib import import_module
from typing import Any

_EXPORTS = {"Phantom": "phantom", "make_phantom": "phantom", "SyntheticSpec": "writer",
            "make_synthetic_dataset": "writer", "CORE_CONTRASTS": "contrasts"}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
