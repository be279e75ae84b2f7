"""Loaders over in-memory arrays that index whole batches at once (no per-item collate)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch


class ArrayLoader:
    """Batches of in-memory arrays as tensors, each gathered with one tensor index per array.

    The batches, their order and every random draw are those of the DataLoader recipe it replaces
    (`DataLoader(TensorDataset(...), batch_size=None, sampler=BatchSampler(RandomSampler(ds,
    generator=g) | SequentialSampler(ds), batch_size, drop_last=False))`; tests/training/
    test_loaders.py compares them), without that recipe's per-batch Python work (a list of ints
    per batch, the fetcher): ~0.5 ms a step, 8 % of a small MLP's step on 2 CPU cores
    (`make bench-trainer`). Like RandomSampler, a shuffled pass draws `torch.randperm(n, g)` for
    its order and, once run to its end, one more (unused); like DataLoader, each pass draws one
    value from the global torch RNG (its worker base seed). So results stay bit-identical."""

    def __init__(self, *arrays: np.ndarray, batch_size: int, shuffle: bool, seed: int = 0) -> None:
        self.tensors = tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in arrays)
        lengths = {len(t) for t in self.tensors}
        if len(lengths) != 1:
            raise ValueError(f"array_loader: arrays of different lengths {sorted(lengths)}")
        if batch_size < 1:
            raise ValueError(f"array_loader: batch_size must be >= 1, got {batch_size}")
        self.n, self.batch_size = lengths.pop(), batch_size
        self.generator = torch.Generator().manual_seed(seed) if shuffle else None

    def __len__(self) -> int:
        return -(-self.n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        torch.empty((), dtype=torch.int64).random_()  # DataLoader's base seed, drawn at iter()
        return self._sequential() if self.generator is None else self._shuffled()

    def _sequential(self) -> Iterator[tuple[torch.Tensor, ...]]:
        for i in range(0, self.n, self.batch_size):  # a copy, as indexing gives
            yield tuple(t[i : i + self.batch_size].clone() for t in self.tensors)

    def _shuffled(self) -> Iterator[tuple[torch.Tensor, ...]]:
        g, n, size = self.generator, self.n, self.batch_size
        order = torch.randperm(n, generator=g)
        for i in range(0, n, size):
            if i + size > n:  # RandomSampler runs out (its trailing draw) before this last,
                torch.randperm(n, generator=g)  # partial batch is yielded
            idx = order[i : i + size]
            yield tuple(t[idx] for t in self.tensors)
        if n % size == 0:  # ... or, when the batches are all full, when one more is asked for
            torch.randperm(n, generator=g)


def array_loader(*arrays: np.ndarray, batch_size: int, shuffle: bool, seed: int = 0) -> ArrayLoader:
    """Batches of the given arrays (same first dimension) as tensors, shuffled by a seeded RNG."""
    return ArrayLoader(*arrays, batch_size=batch_size, shuffle=shuffle, seed=seed)


class _Endless:
    """Batches of indices of n examples, reshuffled (seeded) whenever a pass runs out."""

    def __init__(self, n: int, batch_size: int, g: torch.Generator) -> None:
        self.n, self.batch_size, self.g = n, batch_size, g
        self._order, self._pos = torch.randperm(n, generator=g), 0

    def next(self) -> torch.Tensor:
        if self._pos + self.batch_size <= self.n:  # inside the current pass: one slice
            self._pos += self.batch_size
            return self._order[self._pos - self.batch_size : self._pos]
        idx = []
        while len(idx) < self.batch_size:
            if self._pos >= self.n:
                self._order, self._pos = torch.randperm(self.n, generator=self.g), 0
            take = self._order[self._pos : self._pos + self.batch_size - len(idx)]
            self._pos += len(take)
            idx.extend(take.tolist())
        return torch.tensor(idx)


class PairedLoader:
    """A source batch paired with a target batch (domain adaptation): each item is
    (x_s, y_s, x_t) — or (x_s, y_s, x_t, y_t) when target labels are given (the oracle only).

    Default: one epoch = one pass over the source, the target an endless reshuffled stream (so
    every source batch meets a full target batch). With `steps_per_epoch` both domains are
    endless streams and an "epoch" is that many steps: a run's budget in steps whatever the
    domain sizes (the trainer's epoch end is then a checkpoint)."""

    def __init__(
        self,
        x_s,
        y_s,
        x_t,
        batch_size: int,
        seed: int = 0,
        y_t=None,
        steps_per_epoch: int | None = None,
    ) -> None:
        if len(x_t) == 0:
            raise ValueError("the target domain has no examples")
        if len(x_s) == 0:
            raise ValueError("the source domain has no examples")
        as_t = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
        self.x_s, self.y_s, self.x_t = as_t(x_s), as_t(y_s), as_t(x_t)
        self.y_t = None if y_t is None else as_t(y_t)
        self.batch_size, self.steps_per_epoch = batch_size, steps_per_epoch
        self.source = array_loader(x_s, y_s, batch_size=batch_size, shuffle=True, seed=seed)
        self._s = _Endless(len(x_s), batch_size, torch.Generator().manual_seed(seed))
        self._t = _Endless(len(x_t), batch_size, torch.Generator().manual_seed(seed + 1))

    def __len__(self) -> int:
        return self.steps_per_epoch or len(self.source)

    def _with_target(self, x_s, y_s):
        idx = self._t.next()
        if self.y_t is None:
            return x_s, y_s, self.x_t[idx]
        return x_s, y_s, self.x_t[idx], self.y_t[idx]

    def __iter__(self):
        if self.steps_per_epoch is None:
            for x_s, y_s in self.source:
                yield self._with_target(x_s, y_s)
            return
        for _ in range(self.steps_per_epoch):
            idx = self._s.next()
            yield self._with_target(self.x_s[idx], self.y_s[idx])


class StepLoader:
    """`steps` batches of the given arrays in all, drawn by seeded reshuffled passes (a pass that
    runs out starts a new one), `per_epoch` of them per iteration (the last iteration gets what
    remains): a budget in optimizer steps whatever the data size, e.g. a tiny labelled set
    trained for a fixed number of updates. One iteration = one "epoch" of the trainer, so run
    the trainer for `epochs` iterations."""

    def __init__(
        self, *arrays: np.ndarray, batch_size: int, steps: int, per_epoch: int = 50, seed: int = 0
    ) -> None:
        if not arrays or len(arrays[0]) == 0:
            raise ValueError("StepLoader needs a non-empty array")
        if steps < 1 or per_epoch < 1:
            raise ValueError(f"steps and per_epoch must be >= 1, got {steps} and {per_epoch}")
        self.arrays = [torch.from_numpy(np.ascontiguousarray(a)) for a in arrays]
        self.steps, self.per_epoch, self.done = steps, per_epoch, 0
        g = torch.Generator().manual_seed(seed)
        self._order = _Endless(len(arrays[0]), min(batch_size, len(arrays[0])), g)

    @property
    def epochs(self) -> int:
        return -(-self.steps // self.per_epoch)

    def __len__(self) -> int:
        return min(self.per_epoch, self.steps - self.done) or self.per_epoch

    def __iter__(self):
        for _ in range(min(self.per_epoch, self.steps - self.done)):
            self.done += 1
            idx = self._order.next()
            yield [a[idx] for a in self.arrays]


class MixedLoader:
    """Each batch = one batch of `first` and one of `second` concatenated (e.g. half real, half
    generated images): a fixed mix per batch, whatever the two sets' sizes."""

    def __init__(self, first: StepLoader, second: StepLoader) -> None:
        if (first.steps, first.per_epoch) != (second.steps, second.per_epoch):
            raise ValueError("MixedLoader needs two StepLoaders of the same steps and per_epoch")
        self.first, self.second = first, second

    @property
    def epochs(self) -> int:
        return self.first.epochs

    def __len__(self) -> int:
        return len(self.first)

    def __iter__(self):
        for a, b in zip(self.first, self.second, strict=True):
            yield [torch.cat([u, v]) for u, v in zip(a, b, strict=True)]
