"""array_loader gives the batches, in the order, with the random draws, of the DataLoader recipe
it replaced: results stay bit-identical (the trainer only got faster)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    RandomSampler,
    SequentialSampler,
    TensorDataset,
)

from adaptflow.training.loaders import array_loader


def reference(*arrays, batch_size: int, shuffle: bool, seed: int = 0) -> DataLoader:
    ds = TensorDataset(*(torch.from_numpy(np.ascontiguousarray(a)) for a in arrays))
    g = torch.Generator().manual_seed(seed)
    sampler = RandomSampler(ds, generator=g) if shuffle else SequentialSampler(ds)
    return DataLoader(
        ds, batch_size=None, sampler=BatchSampler(sampler, batch_size, drop_last=False)
    )


def passes(loader, epochs: int, stop_after: int | None) -> list:
    """Batches of `epochs` passes (each cut after `stop_after` batches when given), and one
    global-RNG value after each pass: what the training between passes would draw."""
    out = []
    for _ in range(epochs):
        batches = loader if stop_after is None else itertools.islice(loader, stop_after)
        out.append([tuple(t.clone() for t in b) for b in batches])
        out.append(torch.rand(1))
    return out


@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize(("n", "batch_size"), [(100, 32), (96, 32), (5, 8), (1, 1)])
@pytest.mark.parametrize("stop_after", [None, 1, 3])
def test_the_same_batches_and_random_draws_as_the_dataloader_recipe(
    shuffle, n, batch_size, stop_after
):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 1, 4, 4)).astype(np.float32)
    y = rng.integers(0, 10, n)
    got, want = [], []
    for make, into in ((array_loader, got), (reference, want)):
        torch.manual_seed(123)
        loader = make(x, y, batch_size=batch_size, shuffle=shuffle, seed=7)
        assert len(loader) == -(-n // batch_size)
        into += passes(loader, 3, stop_after)
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        if isinstance(a, torch.Tensor):  # the global RNG is where the DataLoader left it
            assert torch.equal(a, b)
            continue
        assert len(a) == len(b)
        for ba, bb in zip(a, b, strict=True):
            assert all(
                torch.equal(ta, tb) and ta.dtype == tb.dtype for ta, tb in zip(ba, bb, strict=True)
            )


def test_batches_are_copies_and_bad_arguments_are_named():
    x = np.zeros((4, 2), np.float32)
    (batch,) = next(iter(array_loader(x, batch_size=4, shuffle=False)))
    batch += 1  # e.g. in-place noise of a denoising AE
    assert x.sum() == 0
    with pytest.raises(ValueError, match="different lengths"):
        array_loader(x, np.zeros(3), batch_size=2, shuffle=True)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        array_loader(x, batch_size=0, shuffle=True)


@pytest.mark.parametrize(("n", "batch_size"), [(10, 3), (9, 3), (2, 5), (7, 7)])
def test_the_endless_stream_is_the_one_it_was(n, batch_size):
    """_Endless (PairedLoader's streams) takes one slice inside a pass; the stream of indices
    is that of the element-wise version it replaced, across reshuffles."""
    from adaptflow.training.loaders import _Endless

    def before(g):  # the replaced implementation
        order, pos = torch.randperm(n, generator=g), 0
        while True:
            idx = []
            while len(idx) < batch_size:
                if pos >= n:
                    order, pos = torch.randperm(n, generator=g), 0
                take = order[pos : pos + batch_size - len(idx)]
                pos += len(take)
                idx.extend(take.tolist())
            yield torch.tensor(idx)

    now = _Endless(n, batch_size, torch.Generator().manual_seed(3))
    old = before(torch.Generator().manual_seed(3))
    for _ in range(4 * n):
        a, b = now.next(), next(old)
        assert torch.equal(a, b) and a.dtype == b.dtype
