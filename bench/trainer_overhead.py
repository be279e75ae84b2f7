"""Benchmark: images per second of adaptflow's Trainer vs a bare PyTorch loop, same model, same
method loss, same data in memory, same batch size and threads, no tracking.

    make bench-trainer                     # 4 cases x 7 repeats of 3 arms, ~8 min on 2 cores (2 arms: ~5)
    python -m bench.trainer_overhead --epochs 2 --repeats 5

Two runs of 5 repeats x 2 epochs at the same trainer code (8753835, 87a9ecb) gave MLP AE 0.974
and 0.924, timm 1.004 and 1.065: single arms of 0.4-3 s vary by ±5 %, so the defaults time 4
epochs per arm, 7 repeats.

Cases: the MLP and conv autoencoders (the `ae` stage's nets and loss), the LeNet domain-
adaptation step (DANN: a source and a target batch per step) and a timm backbone fine-tuned
(the transfer stages' resnet10t). The bare loop gathers each batch from the in-memory tensor
with a pre-shuffled index (inside the timed loop, as any loop must) and calls the method's own
`update` with a bare step (its loss → zero_grad → backward → step): the same computation, e.g.
DANN's gradient-reversal schedule, which counts the method's steps (before 314ae28 the bare arm
called `batch_losses`, so it trained DANN with a reversal weight of 0). The trainer gets the
data through the loaders the stages use (`array_loader`, `PairedLoader`; the bare index gives
the same batches and images per epoch, checked before timing) and does everything it does in a
stage (loss bookkeeping, NaN check every `log_every` steps, epoch log) except validation, which
the bare loop has no counterpart for, and what validation drives (early stopping, the copy of
the best epoch's weights: `restore_best=False`, no `on_epoch_end`). It runs as two arms: without the progress bar, as a stage
runs with `--no-progress` (CI's `make pipeline`), the arm the goal ≥ 0.95 is for; and with it,
as a stage runs by default (`make pipeline`, the stage benches), its refresh drawn on stderr
(live only when stderr is a terminal: the output says whether it was). Each repeat runs the
three arms back to back, in reverse order on odd repeats, after one untimed warm-up epoch each;
the table shows the median images/s and each trainer arm ÷ bare: the median of the per-repeat
ratios, with their range. The goal's verdict is decided on the pairs, not on the median alone
(one run's median moved 0.93 <-> 1.03 between runs at the same code): the 95 % t interval of
the mean log ratio (geometric mean of the pairs) — "yes" when it lies at or above the goal, "NO"
when below, "undetermined" when it straddles it (more repeats: `--repeats`). Nothing is logged
to MLflow.
"""

from __future__ import annotations

import argparse
import copy
import functools
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch

GOAL = 0.95


@dataclass
class Case:
    name: str
    method: torch.nn.Module  # a fresh copy is trained per arm and repeat
    batch_size: int
    lr: float
    trainer_loader: Callable[[int], object]  # seed -> the stage's loader
    bare_index: Callable[[torch.Generator], list]  # one epoch of batch indices (shuffled)
    take: Callable[[object], tuple]  # batch indices -> the batch (gathered in the timed loop)
    images: Callable[[tuple], int]  # a batch -> the images in it that go through the net


def _mnist(n: int | None = None):
    from adaptflow.config import MnistSource
    from adaptflow.data import SOURCES

    split = SOURCES.get("mnist")(MnistSource(kind="mnist"), 0)
    x, y = split.x_train[:n], split.y_train[:n]
    return np.ascontiguousarray(x, np.float32), np.ascontiguousarray(y, np.int64)


def _slices(n: int, batch: int, g: torch.Generator) -> list[torch.Tensor]:
    order = torch.randperm(n, generator=g)
    return [order[i : i + batch] for i in range(0, n, batch)]


def ae_case(arch: str, x: np.ndarray) -> Case:
    from adaptflow.config import load_params
    from adaptflow.methods.ae import AE_METHODS
    from adaptflow.models.factory import NetSpec
    from adaptflow.training.loaders import array_loader

    cfg = load_params("params.yaml").ae
    spec = NetSpec(x.shape[1:], arch, tuple(cfg.hidden), tuple(cfg.conv_channels), cfg.code_size)
    method = AE_METHODS.get("ae")(spec)
    xt = torch.from_numpy(x)
    return Case(
        f"{arch} autoencoder (ae stage)",
        method,
        cfg.batch_size,
        cfg.lr,
        lambda seed: array_loader(x, batch_size=cfg.batch_size, shuffle=True, seed=seed),
        lambda g: _slices(len(x), cfg.batch_size, g),
        lambda i: (xt[i],),
        lambda batch: len(batch[0]),
    )


def da_case(x: np.ndarray, y: np.ndarray) -> Case:
    from adaptflow.config import load_params
    from adaptflow.methods.da import DA_METHODS
    from adaptflow.models.featurizers import build_featurizer
    from adaptflow.training.loaders import PairedLoader

    cfg = load_params("params.yaml").da
    half = len(x) // 2
    xs, ys, xt_ = x[:half], y[:half], x[half:]  # two "domains": the timing is what counts
    cls = DA_METHODS.get("dann")
    method = cls(build_featurizer(x.shape[1:], cfg.feature_dim), 10, cls.Config(), 10_000)
    b = cfg.batch_size
    txs, tys, txt = (torch.from_numpy(a) for a in (xs, ys, xt_))

    def bare(g: torch.Generator) -> list:
        # PairedLoader's epoch: a pass over the source, each batch with a full target batch
        # from a reshuffled stream (a short last source batch still meets b target images)
        source = _slices(half, b, g)
        passes = -(-len(source) * b // len(xt_))
        stream = torch.cat([torch.randperm(len(xt_), generator=g) for _ in range(passes)])
        return [(s, stream[i * b : (i + 1) * b]) for i, s in enumerate(source)]

    return Case(
        "LeNet DANN step (da stage)",
        method,
        b,
        cfg.lr,
        lambda seed: PairedLoader(xs, ys, xt_, batch_size=b, seed=seed),
        bare,
        lambda ij: (txs[ij[0]], tys[ij[0]], txt[ij[1]]),
        lambda batch: len(batch[0]) + len(batch[2]),
    )


def timm_case(x: np.ndarray, y: np.ndarray) -> Case:
    from adaptflow.config import load_params
    from adaptflow.methods.transfer.finetune import FineTune
    from adaptflow.models.backbones import build_backbone
    from adaptflow.training.loaders import array_loader

    params = load_params("params.yaml")
    bb = next(iter(params.transfer.backbones.values()))
    net = build_backbone(bb.arch, 10, kwargs=bb.kwargs, small_input=bb.small_input)
    b = params.finetune.batch_size
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    return Case(
        f"timm {bb.arch} fine-tuning (finetune stage)",
        FineTune(net),
        b,
        params.finetune.lr,
        lambda seed: array_loader(x, y, batch_size=b, shuffle=True, seed=seed),
        lambda g: _slices(len(x), b, g),
        lambda i: (tx[i], ty[i]),
        lambda batch: len(batch[0]),
    )


DEVICE = torch.device("cpu")  # main() resolves it: a GPU when there is one


def _sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


class BareStep:
    """What a hand-written loop does where the trainer's StepContext is: no autocast, no scaler,
    zero_grad → backward → step."""

    autocast = staticmethod(nullcontext)

    @staticmethod
    def backward(loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def run_bare(method, indices: list, take: Callable, lr: float) -> None:
    """The method's own `update` (its loss and what else a step of it does, e.g. DANN's GRL
    schedule counting steps) with a bare step, over batches gathered by index."""
    method.to(DEVICE).train()
    method.optimizers = [torch.optim.Adam(method.parameters(), lr=lr)]
    step = BareStep()
    for idx in indices:
        method.update(tuple(t.to(DEVICE, non_blocking=True) for t in take(idx)), step)
    del method.optimizers
    _sync()


def run_trainer(method, loader, lr: float, epochs: int, progress: bool) -> None:
    from adaptflow.training import Trainer

    method.to(DEVICE)
    opt = torch.optim.Adam(method.parameters(), lr=lr)
    # AMP off: the bare step has no autocast or scaler, so on a GPU both arms run fp32 and the
    # ratio is the trainer's own cost, not AMP's gain
    trainer = Trainer(DEVICE, epochs, amp=False, progress=progress, restore_best=False)
    trainer.fit(method, loader, None, optimizers=[opt])
    _sync()


def epoch_images(case: Case) -> int:
    """Images through the net in one epoch, the same in both arms (else a ratio of images/s
    compares different work): as many batches, as many images, from the stage's loader as from
    the bare index."""
    loader = [case.images(batch) for batch in case.trainer_loader(0)]
    bare = [case.images(case.take(i)) for i in case.bare_index(torch.Generator().manual_seed(0))]
    assert (len(loader), sum(loader)) == (len(bare), sum(bare)), (
        f"{case.name}: the trainer's loader gives {len(loader)} batches of {sum(loader)} images "
        f"an epoch, the bare index {len(bare)} of {sum(bare)}"
    )
    return sum(bare)


ARMS = ("bare", "trainer", "trainer, bar")  # the trainer arms: progress bar off, on


def measure(case: Case, epochs: int, repeats: int) -> dict[str, list[float]]:
    """Images/s per arm and repeat, after one untimed warm-up epoch of each arm: each repeat
    runs the arms back to back, in reverse order on odd repeats (a drift of the machine then
    weighs on every arm alike)."""
    images = epoch_images(case) * epochs
    speeds = {arm: [] for arm in ARMS}

    def bare(seed: int) -> None:
        m = copy.deepcopy(case.method)
        g = torch.Generator().manual_seed(seed)
        indices = [i for _ in range(epochs) for i in case.bare_index(g)]
        t0 = time.perf_counter()
        run_bare(m, indices, case.take, case.lr)
        speeds["bare"].append(images / (time.perf_counter() - t0))

    def trainer(seed: int, progress: bool) -> None:
        m = copy.deepcopy(case.method)
        loader = case.trainer_loader(seed)
        t0 = time.perf_counter()
        run_trainer(m, loader, case.lr, epochs, progress)
        speeds["trainer, bar" if progress else "trainer"].append(
            images / (time.perf_counter() - t0)
        )

    run_bare(copy.deepcopy(case.method), case.bare_index(torch.Generator()), case.take, case.lr)
    for progress in (False, True):
        run_trainer(copy.deepcopy(case.method), case.trainer_loader(0), case.lr, 1, progress)
    arms = (
        bare,
        functools.partial(trainer, progress=False),
        functools.partial(trainer, progress=True),
    )
    for r in range(repeats):
        for arm in arms if r % 2 == 0 else arms[::-1]:
            arm(r)
    return speeds


def ratios(speeds: dict[str, list[float]], arm: str) -> list[float]:
    """`arm` ÷ bare per repeat: the arms of a repeat run back to back, so a slow moment of the
    machine hits both, where the ratio of the arms' medians would mix them."""
    return [t / b for t, b in zip(speeds[arm], speeds["bare"], strict=True)]


def verdict(pair_ratios: list[float], goal: float = GOAL) -> tuple[float, float, float, str]:
    """(geometric mean, 95 % interval low, high, verdict) of per-repeat ratios against `goal`:
    "yes" if the interval is at or above it, "NO" if below, else "undetermined"."""
    from scipy import stats

    if len(pair_ratios) < 2:
        raise ValueError(f"a verdict needs at least 2 repeats, got {len(pair_ratios)}")
    logs = np.log(np.asarray(pair_ratios, dtype=float))
    mean = float(logs.mean())
    half = float(stats.t.ppf(0.975, len(logs) - 1) * logs.std(ddof=1) / np.sqrt(len(logs)))
    low, high = float(np.exp(mean - half)), float(np.exp(mean + half))
    if low >= goal:
        word = "yes"
    elif high < goal:
        word = "NO"
    else:
        word = "undetermined"
    return float(np.exp(mean)), low, high, word


def main(argv: list[str] | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    from adaptflow.env import configure_env

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4, help="timed epochs per arm and repeat")
    parser.add_argument("--repeats", type=int, default=7, help="repeats of the arms per case")
    parser.add_argument("--images", type=int, default=4000, help="mnist training images used")
    args = parser.parse_args(argv)
    configure_env(".")
    from adaptflow.training import resolve_device

    global DEVICE
    DEVICE = resolve_device("auto")
    x, y = _mnist(args.images)
    cases = [ae_case("mlp", x), ae_case("conv", x), da_case(x, y), timm_case(x, y)]
    table = Table(
        title=f"Trainer vs a bare PyTorch loop (images/s, median of {args.repeats} repeats of "
        f"{args.epochs} epochs per arm; {torch.get_num_threads()} threads, {DEVICE.type})"
    )
    cols = (
        "case",
        "batch",
        "bare loop",
        "trainer, no bar",
        "no bar ÷ bare (median of pairs)",
        "geometric mean [95 % CI]",
        f"≥ {GOAL}",
        "trainer, bar",
        "bar ÷ bare (median of pairs)",
    )
    for col in cols:
        table.add_column(col, justify="left" if col == "case" else "right")
    t0 = time.perf_counter()
    for case in cases:
        speeds = measure(case, args.epochs, args.repeats)
        off, on = ratios(speeds, "trainer"), ratios(speeds, "trainer, bar")
        gmean, low, high, word = verdict(off)
        table.add_row(
            case.name,
            str(case.batch_size),
            *(f"{statistics.median(speeds[arm]):,.0f}" for arm in ARMS[:2]),
            f"{statistics.median(off):.3f} ({min(off):.2f}–{max(off):.2f})",
            f"{gmean:.3f} [{low:.3f}, {high:.3f}]",
            word,
            f"{statistics.median(speeds['trainer, bar']):,.0f}",
            f"{statistics.median(on):.3f} ({min(on):.2f}–{max(on):.2f})",
        )
    Console(width=160).print(table)
    seconds = time.perf_counter() - t0
    drawn = "a terminal: drawn live" if sys.stderr.isatty() else "not a terminal: not drawn live"
    note = (
        f"No bar = a stage with `--no-progress` (CI's `make pipeline`): the goal ≥ {GOAL} is "
        "its. Bar = a stage's default (`make pipeline`, the stage benches): updated every "
        f"`log_every` steps, redrawn by rich 10 times a second on stderr ({drawn} here). "
        f"≥ {GOAL}: the 95 % t interval of the pairs' mean log ratio — yes at or above the goal, "
        "NO below it, undetermined when it straddles it (more repeats decide)."
    )
    print(f"{note}\nwall time {seconds:.0f} s")
    if vars(args) == vars(parser.parse_args([])):  # `make bench-trainer` as it is
        from bench.report_io import markdown_table, save_result

        body = f"{markdown_table(table)}\n\n{note}"
        print(f"written: {save_result('trainer', body, seconds)}")


if __name__ == "__main__":
    main()
