"""`adaptflow predict` and `adaptflow models`: a registered model round-trips through models:/
with its alias, inputs are checked against its signature, and nothing half-written is left."""

from __future__ import annotations

import csv

import mlflow
import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from adaptflow.cli import app
from adaptflow.tracking import models
from adaptflow.tracking.store import configure

RUN = CliRunner()


def register(net: torch.nn.Module, example: np.ndarray, name: str, alias: str = "champion"):
    with mlflow.start_run():
        uri = models.log_torch_model(net, example)
    version = mlflow.register_model(uri, name, await_registration_for=0).version
    MlflowClient().set_registered_model_alias(name, alias, version)
    return version


def said(result) -> str:
    return " ".join(result.output.split())


def rows(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def store(project):
    configure(".", "serving")
    torch.manual_seed(0)
    classifier = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3)).eval()
    register(classifier, np.zeros((2, 1, 4, 4), np.float32), "t-clf")
    ae = torch.nn.Linear(16, 16).eval()
    register(ae, np.zeros((2, 16), np.float32), "t-ae", alias="champion-x")
    vector = torch.nn.Linear(5, 2).eval()  # a feature-vector model: values are never rescaled
    register(vector, np.zeros((2, 5), np.float32), "t-vec")
    return project, classifier, ae


def test_predict_writes_class_probabilities_of_the_champion(store):
    project, net, _ = store
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (7, 4, 4), dtype=np.uint8)  # (H, W) rows, uint8 pixels
    np.savez(project / "in.npz", x=images)
    result = RUN.invoke(app, ["predict", "-m", "t-clf@champion", "-i", "in.npz", "-o", "p.csv"])
    assert result.exit_code == 0, result.output
    got = rows(project / "p.csv")
    with torch.no_grad():  # what the served model must compute: pixels scaled like training
        x = torch.from_numpy(images.astype(np.float32)[:, None] / 255)
        want = torch.softmax(net(x), 1).numpy()
    assert [r["input"] for r in got] == [str(i) for i in range(7)]
    probs = np.array([[float(r[f"p_{k}"]) for k in range(3)] for r in got])
    np.testing.assert_allclose(probs, want, rtol=1e-4, atol=1e-6)
    assert [int(r["prediction"]) for r in got] == want.argmax(1).tolist()
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-5)


def test_an_autoencoder_gives_its_reconstruction_error(store):
    project, _, ae = store
    x = np.random.default_rng(1).random((5, 16), dtype=np.float32)
    np.save(project / "in.npy", x)
    result = RUN.invoke(
        app, ["predict", "-m", "models:/t-ae@champion-x", "-i", "in.npy", "-o", "a.csv"]
    )
    assert result.exit_code == 0, result.output
    flat = torch.from_numpy(x)
    with torch.no_grad():
        want = ((ae(flat) - flat) ** 2).mean(1).numpy()
    got = [float(r["reconstruction_mse"]) for r in rows(project / "a.csv")]
    np.testing.assert_allclose(got, want, rtol=1e-4)


def test_images_from_a_folder_are_resized_to_the_model_input(store):
    from PIL import Image

    project, net, _ = store
    (project / "imgs" / "sub").mkdir(parents=True)
    grey = {"imgs/a.png": 0, "imgs/sub/b.png": 102, "imgs/c.png": 255}
    for where, level in grey.items():
        Image.fromarray(np.full((8, 8, 3), level, np.uint8)).save(project / where)
    (project / "imgs" / "notes.txt").write_text("not an image")
    result = RUN.invoke(app, ["predict", "-m", "t-clf@champion", "-i", "imgs", "-o", "f.csv"])
    assert result.exit_code == 0, result.output
    got = rows(project / "f.csv")
    assert [r["input"] for r in got] == ["a.png", "c.png", "sub/b.png"]
    with torch.no_grad():  # flat grey 8x8 RGB -> one channel, 4x4, in [0, 1]
        x = torch.tensor([0.0, 1.0, 0.4]).view(3, 1, 1, 1).expand(3, 1, 4, 4)
        want = torch.softmax(net(x), 1).numpy()
    probs = np.array([[float(r[f"p_{k}"]) for k in range(3)] for r in got])
    np.testing.assert_allclose(probs, want, rtol=1e-4, atol=1e-6)


def test_pixels_in_0_255_are_scaled_whatever_their_dtype_and_vectors_never(store):
    project, net, _ = store
    images = np.random.default_rng(2).integers(0, 256, (4, 1, 4, 4)).astype(np.float64)
    np.savez(project / "f.npz", x=images)  # float 0..255 (not uint8): still pixels
    assert (
        RUN.invoke(app, ["predict", "-m", "t-clf@champion", "-i", "f.npz", "-o", "a.csv"]).exit_code
        == 0
    )
    with torch.no_grad():
        want = torch.softmax(net(torch.from_numpy(images.astype(np.float32) / 255)), 1).numpy()
    got = np.array([[float(r[f"p_{k}"]) for k in range(3)] for r in rows(project / "a.csv")])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    features = np.arange(10, dtype=np.uint8).reshape(2, 1, 5) * 20  # (1, D) rows of a vector
    np.savez(project / "v.npz", x=features)
    assert (
        RUN.invoke(app, ["predict", "-m", "t-vec@champion", "-i", "v.npz", "-o", "v.csv"]).exit_code
        == 0
    )
    from adaptflow.serving import read_input

    x, _ = read_input(project / "v.npz", (5,))
    np.testing.assert_array_equal(x, features.reshape(2, 5).astype(np.float32))  # unscaled


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (
            np.zeros((3, 5, 5), np.float32),
            "rows of shape (5, 5) do not fit the model's input (1, 4, 4)",
        ),
        (np.full((3, 4, 4), np.nan, np.float32), "NaN or infinite"),
        (np.full((3, 4, 4), -2.0, np.float32), "pixel values run -2..-2"),
        (np.zeros((3, 4, 4, 3), np.float32), "rows of shape (4, 4, 3) do not fit"),  # RGB, HWC
        (np.zeros((0, 4, 4), np.float32), "no rows to predict"),
    ],
)
def test_a_bad_input_is_refused_and_nothing_is_written(store, array, message):
    project, _, _ = store
    np.savez(project / "bad.npz", x=array)
    result = RUN.invoke(app, ["predict", "-m", "t-clf@champion", "-i", "bad.npz", "-o", "p.csv"])
    assert result.exit_code == 1 and message in said(result)
    assert not list(project.glob("*p.csv*"))  # no output, no temporary file


def test_a_failure_while_writing_keeps_the_old_file_and_leaves_no_temporary(project):
    from adaptflow.serving import Prediction, write_csv

    (project / "p.csv").write_text("old\n")

    def rows_then_crash():
        yield ["0", 1.0]
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_csv(Prediction("classes", ["input", "p"], rows_then_crash()), project / "p.csv")
    assert (project / "p.csv").read_text() == "old\n"
    assert sorted(p.name for p in project.iterdir() if "p.csv" in p.name) == ["p.csv"]
    write_csv(Prediction("classes", ["input", "p"], [["0", 0.5]]), project / "p.csv")
    assert (project / "p.csv").read_text().splitlines() == ["input,p", "0,0.5"]


def test_an_unknown_model_or_key_names_the_fix(store):
    project, _, _ = store
    np.savez(project / "two.npz", a=np.zeros((1, 16)), b=np.zeros((1, 16)))
    result = RUN.invoke(app, ["predict", "-m", "t-nope@champion", "-i", "two.npz"])
    assert result.exit_code == 1 and "adaptflow models" in said(result)
    result = RUN.invoke(app, ["predict", "-m", "t-clf@champion", "-i", "two.npz"])
    assert result.exit_code == 1 and "pass --x-key" in said(result)
    result = RUN.invoke(app, ["predict", "-m", "t-clf@champion", "-i", "two.npz", "--x-key", "b"])
    assert result.exit_code == 0, result.output


def test_models_lists_versions_aliases_and_gate_decisions(store):
    from adaptflow.serving import registry_rows

    MlflowClient().set_model_version_tag("t-clf", "1", "gate.decision", "champion")
    got = {(r["name"], r["version"]): r for r in registry_rows()}
    assert got[("t-clf", "1")]["aliases"] == "champion"
    assert got[("t-clf", "1")]["decision"] == "champion"
    assert got[("t-ae", "1")]["aliases"] == "champion-x"
    result = RUN.invoke(app, ["models"])
    assert result.exit_code == 0 and "t-clf" in result.output
    odd = "team's-model"  # a quote is a legal name: no filter string has to quote it
    register(torch.nn.Linear(5, 2), np.zeros((1, 5), np.float32), odd)
    assert (odd, "1") in {(r["name"], r["version"]) for r in registry_rows()}


def test_without_a_store_the_commands_say_how_to_make_one(project, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    result = RUN.invoke(app, ["models"])
    assert result.exit_code == 1 and "run the pipeline first" in said(result)


@pytest.mark.parametrize(
    ("row", "model", "ok"),
    [
        ((4, 4), (1, 4, 4), True),  # a grey image without its channel axis
        ((16,), (1, 4, 4), True),  # flat grey image
        ((4, 4, 1), (1, 4, 4), True),  # one channel: the same values in the same order
        ((1, 16), (16,), True),  # a vector with a size-1 axis
        ((4, 4), (16,), False),  # a vector model never flattens a 2-D row
        ((48,), (3, 4, 4), False),  # flat colour: channel order unknown
        ((4, 4, 3), (3, 4, 4), False),  # channel-last colour
    ],
)
def test_only_layouts_holding_the_same_values_in_order_are_reshaped(row, model, ok):
    from adaptflow.serving import ServingError, _fit

    x = np.arange(2 * np.prod(row), dtype=np.float32).reshape(2, *row)
    if ok:
        np.testing.assert_array_equal(_fit(x, model, "t").reshape(2, -1), x.reshape(2, -1))
    else:
        with pytest.raises(ServingError, match="do not fit"):
            _fit(x, model, "t")
