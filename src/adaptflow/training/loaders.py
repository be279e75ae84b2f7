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


class PairedLoader:
    """Source epochs paired with an endless shuffled target stream (domain adaptation): each
    item is (x_s, y_s, x_t), batch_size of each; one epoch = one pass over the source. The target
    stream reshuffles whenever it runs out, so every source batch meets a full target batch."""

    def __init__(self, x_s, y_s, x_t, batch_size: int, seed: int = 0) -> None:
        if len(x_t) == 0:
            raise ValueError("the target domain has no examples")
        self.source = array_loader(x_s, y_s, batch_size=batch_size, shuffle=True, seed=seed)
        self.x_t = torch.from_numpy(np.ascontiguousarray(x_t))
        self.batch_size = batch_size
        self.g = torch.Generator().manual_seed(seed + 1)
        self._order, self._pos = torch.randperm(len(self.x_t), generator=self.g), 0

    def __len__(self) -> int:
        return len(self.source)

    def _target_batch(self) -> torch.Tensor:
        idx = []
        while len(idx) < self.batch_size:
            if self._pos >= len(self._order):
                self._order, self._pos = torch.randperm(len(self.x_t), generator=self.g), 0
            take = self._order[self._pos : self._pos + self.batch_size - len(idx)]
            self._pos += len(take)
            idx.extend(take.tolist())
        return self.x_t[idx]

    def __iter__(self):
        for x_s, y_s in self.source:
            yield x_s, y_s, self._target_batch()
