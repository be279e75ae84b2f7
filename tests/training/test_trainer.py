import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from adaptflow.config import ParamsError
from adaptflow.training import (
    CheckpointError,
    EarlyStopping,
    NonFiniteLossError,
    Trainer,
    load_checkpoint,
    resolve_device,
    save_checkpoint,
    seed_everything,
)


class Regressor(nn.Module):
    """A minimal method: y = Wx, MSE; optional NaN injection after `nan_after` steps."""

    def __init__(self, nan_after: int | None = None):
        super().__init__()
        self.lin = nn.Linear(4, 1)
        self.nan_after, self.steps = nan_after, 0
        self.optimizers = [torch.optim.SGD(self.parameters(), lr=0.1)]

    def _loss(self, batch):
        x, y = batch
        return nn.functional.mse_loss(self.lin(x).squeeze(1), y)

    def update(self, batch, step):
        with step.autocast():
            loss = self._loss(batch)
        self.steps += 1
        if self.nan_after is not None and self.steps > self.nan_after:
            loss = loss * torch.tensor(float("nan"))
        step.backward(loss, self.optimizers[0])
        return {"loss": loss}

    def evaluate_batch(self, batch):
        return {"loss": self._loss(batch)}


def data(n=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.01 * torch.randn(n, generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True, generator=g)


def test_loss_decreases_and_best_is_restored(tmp_path):
    seed_everything(0)
    m = Regressor()
    seen = []
    t = Trainer(
        torch.device("cpu"),
        epochs=5,
        log_every=3,
        checkpoint_dir=tmp_path,
        progress=False,
        on_epoch_end=lambda e, metrics: seen.append(e),
    )
    h = t.fit(m, data(), data(64, seed=1))
    losses = h.series("loss")
    assert losses[-1] < 0.1 * losses[0]
    assert seen == [1, 2, 3, 4, 5] and h.best_epoch >= 1
    assert (tmp_path / "best.pt").is_file() and (tmp_path / "last.pt").is_file()
    assert min(h.series("val_loss")) == pytest.approx(
        t.evaluate(m, data(64, seed=1))["loss"], rel=1e-5
    )


def test_nan_loss_is_detected():
    m = Regressor(nan_after=5)
    t = Trainer(torch.device("cpu"), epochs=3, log_every=4, progress=False)
    with pytest.raises(NonFiniteLossError, match="lower the learning rate"):
        t.fit(m, data())


def test_early_stopping_logic():
    es = EarlyStopping(patience=2, min_delta=0.01)
    assert es.update(1.0, 1) and not es.should_stop
    assert not es.update(0.995, 2)  # within min_delta: not an improvement
    assert not es.update(1.2, 3) and es.should_stop
    assert es.best_epoch == 1 and EarlyStopping(patience=None).should_stop is False


def test_early_stopping_stops_training():
    class Constant(Regressor):
        def evaluate_batch(self, batch):
            return {"loss": torch.tensor(1.0)}  # validation never improves

    h = Trainer(torch.device("cpu"), epochs=20, patience=2, progress=False).fit(
        Constant(), data(), data(32)
    )
    assert h.stopped_early and len(h.epochs) == 3 and h.best_epoch == 1


def test_checkpoint_roundtrip_and_errors(tmp_path):
    a, b = Regressor(), Regressor()
    save_checkpoint(tmp_path / "c.pt", a, epoch=3)
    state = load_checkpoint(tmp_path / "c.pt", b)
    assert state["epoch"] == 3 and torch.equal(a.lin.weight, b.lin.weight)
    with pytest.raises(CheckpointError, match="does not fit"):
        load_checkpoint(tmp_path / "c.pt", nn.Linear(3, 3))
    (tmp_path / "junk.pt").write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_checkpoint(tmp_path / "junk.pt", b)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "none.pt", b)


def test_weights_only_refuses_pickled_code(tmp_path):
    torch.save({"model": Regressor().state_dict(), "evil": np.dtype}, tmp_path / "p.pt")
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "p.pt", Regressor())


def fake_accelerators(monkeypatch, cuda: bool, mps: bool) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)


@pytest.mark.parametrize(
    ("cuda", "mps", "expected"),
    [(True, True, "cuda"), (True, False, "cuda"), (False, True, "mps"), (False, False, "cpu")],
)
def test_auto_device_prefers_cuda_then_mps_then_cpu(monkeypatch, cuda, mps, expected):
    fake_accelerators(monkeypatch, cuda, mps)
    assert resolve_device("auto") == torch.device(expected)


def test_explicit_device_is_kept_or_refused_with_a_fix(monkeypatch):
    fake_accelerators(monkeypatch, cuda=False, mps=False)
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ParamsError, match=r"no CUDA GPU is visible .*; use device: auto"):
        resolve_device("cuda")
    with pytest.raises(ParamsError, match="MPS is not available; use device: auto"):
        resolve_device("mps")
    fake_accelerators(monkeypatch, cuda=True, mps=True)
    assert resolve_device("cpu") == torch.device("cpu")  # cpu asked, cpu given
    assert resolve_device("cuda") == torch.device("cuda")
    assert resolve_device("mps") == torch.device("mps")


def test_seeding_is_reproducible():
    seed_everything(7)
    a = (torch.rand(3), np.random.rand(), math.nan)
    seed_everything(7)
    b = (torch.rand(3), np.random.rand(), math.nan)
    assert torch.equal(a[0], b[0]) and a[1] == b[1]


def test_restore_best_false_keeps_the_last_weights():
    class Worsening(Regressor):
        def evaluate_batch(self, batch):  # validation only gets worse: best epoch is 1
            self.calls = getattr(self, "calls", 0) + 1
            return {"loss": torch.tensor(float(self.calls))}

    def train(restore_best: bool, epochs: int) -> Worsening:
        torch.manual_seed(0)
        m = Worsening()
        t = Trainer(torch.device("cpu"), epochs=epochs, progress=False, restore_best=restore_best)
        t.fit(m, data(), data(32))
        return m

    last, best = train(False, 3), train(True, 3)
    assert torch.equal(last.lin.weight, train(False, 3).lin.weight)  # deterministic
    assert torch.equal(best.lin.weight, train(False, 1).lin.weight)  # the epoch-1 weights
    assert not torch.equal(last.lin.weight, best.lin.weight)


def test_step_loader_yields_exactly_the_budget_in_epochs_of_per_epoch():
    import numpy as np

    from adaptflow.training.loaders import MixedLoader, StepLoader

    x = np.arange(10, dtype=np.float32)[:, None]
    loader = StepLoader(x, batch_size=4, steps=7, per_epoch=3, seed=0)
    per_epoch = [len(list(loader)) for _ in range(loader.epochs)]
    assert loader.epochs == 3 and per_epoch == [3, 3, 1] and loader.done == 7
    assert list(loader) == []  # the budget is spent
    a = StepLoader(x, batch_size=2, steps=4, per_epoch=4, seed=0)
    b = StepLoader(x + 100, batch_size=2, steps=4, per_epoch=4, seed=1)
    batches = list(MixedLoader(a, b))
    assert len(batches) == 4
    assert all(
        len(t[0]) == 4 and (t[0][:2] < 100).all() and (t[0][2:] >= 100).all() for t in batches
    )
