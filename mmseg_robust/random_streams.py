"""Random streams keyed by (seed, step): resumed runs and every rank of a distributed run draw the
same numbers, and no two (seed, step) pairs share a stream.

Seeds of the form ``seed * C + step`` collide (seed 0 at step C is seed 1 at step 0); a
``numpy.random.SeedSequence`` hashes the whole tuple instead.
"""

from __future__ import annotations

import numpy as np
import torch

#: Stream identifiers, so that two consumers keyed by the same (seed, step) still differ.
CONFLICT_ORDERS = 1
MODALITY_DROPOUT = 2
#: SeedSequence takes non-negative entropy; a negative seed maps to its two's complement.
_UINT64 = (1 << 64) - 1


def step_seed(seed: int, step: int, stream: int) -> int:
    """A 63-bit seed, a hash of ``(seed, step, stream)``."""
    sequence = np.random.SeedSequence([seed & _UINT64, step & _UINT64, stream])
    return int(sequence.generate_state(1, np.uint64)[0] >> np.uint64(1))


def step_generator(seed: int, step: int, stream: int) -> torch.Generator:
    """A CPU torch generator seeded with :func:`step_seed`."""
    return torch.Generator().manual_seed(step_seed(seed, step, stream))
