"""Stage `seq`: one tiny run (a nested run per model and seed, the timing run, the image runs,
the gate on the validation split) and the verdicts fed results that support or contradict
each claim."""

from __future__ import annotations

import pytest
import torch
import yaml

from adaptflow.config import Mnist1dSource, MnistSource, build_params
from adaptflow.data import SOURCES
from adaptflow.evaluation.verdicts import FAILS, FEW_SEEDS, HOLDS, NOISE
from adaptflow.stages import seq as stage

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def data():
    return (
        SOURCES.get("mnist1d")(Mnist1dSource(kind="mnist1d", num_samples=500), 0),
        SOURCES.get("mnist")(MnistSource(kind="mnist"), 0),
    )


def test_stage_run_logs_every_model_and_gates_on_validation(data, project):
    import mlflow
    from mlflow.tracking import MlflowClient

    from adaptflow.data.prepare import Prepared
    from adaptflow.stages.base import StageContext, split_fingerprint, split_train_val
    from adaptflow.tracking import runs
    from adaptflow.tracking.store import configure

    seq, mnist = data
    params = build_params(yaml.safe_load(open("params.yaml")), {"profile": "smoke"})
    cfg = params.seq.model_copy(
        update={
            "seeds": [0, 1],
            "epochs": 1,
            "max_train": 200,
            "max_test": 100,
            "timing_lengths": [20, 40],
            "timing_batches": 1,
            "timing_repeats": 2,
            "image_seeds": [0],
        }
    )
    params = params.model_copy(update={"seq": cfg})
    exp_id = configure(".", "test-seq")
    ctx = StageContext(project, exp_id, CPU, progress=False)
    inputs = {
        "mnist1d": Prepared("mnist1d", project / "a.npz", {"md5": "s1"}, seq),
        "mnist": Prepared("mnist", project / "b.npz", {"md5": "m1"}, mnist),
    }
    with runs.run("seq", experiment_id=exp_id) as active:
        outcome = stage.run(params, ctx, inputs)
    client = MlflowClient()
    children = {
        r.data.tags["mlflow.runName"]: r
        for r in client.search_runs([exp_id], f"tags.`mlflow.parentRunId` = '{active.info.run_id}'")
    }
    expected = {f"seq/{m}-s{s}" for m in cfg.models for s in cfg.seeds}
    expected |= {"seq/timing"} | {f"seq/image-{b}-s0" for b in cfg.image_models}
    assert set(children) == expected
    timing = client.get_metric_history(
        children["seq/timing"].info.run_id, "seq/timing/lstm_step_ms"
    )
    assert sorted(m.step for m in timing) == [20, 40]

    # the gate: the registered Transformer's accuracy on the VALIDATION split, never test
    _, val = split_train_val(len(seq.x_train), cfg.val_fraction, cfg.max_train, params.seed)
    model = mlflow.pytorch.load_model(outcome.model_uri)
    with torch.no_grad():
        pred = model(torch.from_numpy(seq.x_train[val])).argmax(1).numpy()
    acc = float((pred == seq.y_train[val]).mean())
    assert outcome.metrics["seq/gate_val_acc"] == pytest.approx(acc)
    assert stage.STAGE.gate.metric == "seq/gate_val_acc"
    assert outcome.gate_context["val_split"] == split_fingerprint(val)
    assert outcome.gate_context["input_shape"] == "1x40"
    # the test accuracy reported is the same model's on the test split
    first = children["seq/transformer-s0"].data.metrics
    with torch.no_grad():
        test_pred = model(torch.from_numpy(seq.x_test[:100])).argmax(1).numpy()
    assert first["seq/test_acc"] == pytest.approx(float((test_pred == seq.y_test[:100]).mean()))
    report = mlflow.artifacts.load_text(f"runs:/{active.info.run_id}/seq/report.md")
    assert "Parallel vs sequential" in report and "ViT vs CNN" in report
    assert client.search_registered_models() == []


# ------------------------------------------------------------------ verdicts
def _results(tr=0.8, rnn=0.7, seeds=(0, 1, 2)):
    acc = lambda base: {s: {"test_acc": base + 0.01 * s} for s in seeds}  # noqa: E731
    return {"transformer": acc(tr), "lstm": acc(rnn), "gru": acc(rnn)}


def _timing(transformer_ms, lstm_ms, repeats=3):
    return [
        {
            "length": L,
            "repeat": r,
            "model": m,
            "step_s": t[L] * (1 + 0.01 * r) / 1000,
            "forward_s": 0.0,
        }
        for L in transformer_ms
        for r in range(repeats)
        for m, t in (("transformer", transformer_ms), ("lstm", lstm_ms))
    ]


def _images(vit, cnn, seeds=(0, 1, 2)):
    return {
        "vit": {s: {"test_acc": vit + 0.01 * s} for s in seeds},
        "cnn": {s: {"test_acc": cnn + 0.005 * s} for s in seeds},
    }


def _verdicts(results, timing, images):
    cfg = build_params(yaml.safe_load(open(_PARAMS))).seq
    return [v for _, _, v in stage.decide(results, timing, images, cfg, "cpu")]


_PARAMS = __import__("pathlib").Path(__file__).resolve().parents[2] / "params.yaml"


def test_verdicts_follow_the_measurements():
    parallel = _timing({40: 10.0, 640: 20.0}, {40: 15.0, 640: 200.0})
    assert _verdicts(_results(), parallel, _images(0.97, 0.95)) == [HOLDS] * 5
    sequential = _timing({40: 10.0, 640: 400.0}, {40: 5.0, 640: 60.0})  # CPU-like: LSTM wins
    assert _verdicts(_results(0.6, 0.7), sequential, _images(0.90, 0.97)) == [FAILS] * 5


def test_mixed_lengths_and_noise():
    crossing = _timing({40: 10.0, 640: 20.0}, {40: 5.0, 640: 200.0})  # faster only when long
    v = _verdicts(_results(), crossing, {})
    assert v[2] == FAILS and v[3] == HOLDS  # not at every length, but the advantage grows
    noisy = {
        "transformer": {0: {"test_acc": 0.8}, 1: {"test_acc": 0.7}, 2: {"test_acc": 0.75}},
        "lstm": {0: {"test_acc": 0.7}, 1: {"test_acc": 0.8}, 2: {"test_acc": 0.76}},
    }
    assert _verdicts(noisy, [], {}) == [NOISE]


def test_one_seed_is_never_enough():
    v = _verdicts(
        _results(seeds=(0,)),
        _timing({40: 1.0, 80: 2.0}, {40: 2.0, 80: 5.0}, repeats=1),
        _images(0.9, 0.8, seeds=(0,)),
    )
    assert set(v) == {FEW_SEEDS}
