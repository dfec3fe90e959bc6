"""Embedded synthetic BraTS-like data: a phantom generator and a writer for every raw layout."""

from mmseg_robust.data.synthetic.phantom import Phantom, make_phantom
from mmseg_robust.data.synthetic.writer import SyntheticSpec, make_synthetic_dataset

__all__ = ["Phantom", "SyntheticSpec", "make_phantom", "make_synthetic_dataset"]
