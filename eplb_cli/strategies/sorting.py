"""Integer row sorts for the torch-facing helpers, with a NumPy fast path on CPU.

PyTorch's CPU sort costs ~2 us per row on the 2-core benchmark machine; NumPy's
integer sort is several times cheaper on rows of at least :data:`PACKED_MIN`
values. The strategies' own loops sort inside their compiled kernels
(:func:`.kernels.argsort`); this serves :func:`.refine.to_slots`.
"""

from __future__ import annotations

import numpy as np
import torch

PACKED_MIN = 64


def sort_ints(key: torch.Tensor) -> torch.Tensor:
    """Each row of distinct non-negative int64 ``key`` [B, m] in increasing order (NumPy on CPU)."""
    if key.device.type != "cpu" or key.shape[1] < PACKED_MIN:
        return torch.sort(key, dim=1).values
    return torch.from_numpy(np.sort(key.numpy(), axis=1))
