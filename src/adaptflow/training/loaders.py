"""DataLoaders over in-memory arrays that index whole batches at once (no per-item collate)."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    RandomSampler,
    SequentialSampler,
    TensorDataset,
)


def array_loader(*arrays: np.ndarray, batch_size: int, shuffle: bool, seed: int = 0) -> DataLoader:
    """Batches of the given arrays (same first dimension) as tensors, shuffled by a seeded RNG."""
    ds = TensorDataset(*(torch.from_numpy(np.ascontiguousarray(a)) for a in arrays))
    g = torch.Generator().manual_seed(seed)
    sampler = RandomSampler(ds, generator=g) if shuffle else SequentialSampler(ds)
    # batch_size=None + a BatchSampler: the dataset is indexed with a list of indices per batch
    return DataLoader(
        ds, batch_size=None, sampler=BatchSampler(sampler, batch_size, drop_last=False)
    )
