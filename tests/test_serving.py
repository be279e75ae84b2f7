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
    x = np.random.default_rng(1).random((5, 4, 4), dtype=np.float32)  # floats: not rescaled
    np.save(project / "in.npy", x)
    result = RUN.invoke(
        app, ["predict", "-m", "models:/t-ae@champion-x", "-i", "in.npy", "-o", "a.csv"]
    )
    assert result.exit_code == 0, result.output
    flat = torch.from_numpy(x.reshape(5, 16))
    with torch.no_grad():
        want = ((ae(flat) - flat) ** 2).mean(1).numpy()
    got = [float(r["reconstruction_mse"]) for r in rows(project / "a.csv")]
    np.testing.assert_allclose(got, want, rtol=1e-4)


def test_images_from_a_folder_are_resized_to_the_model_input(store):
    from PIL import Image

    project, _, _ = store
    (project / "imgs" / "sub").mkdir(parents=True)
    for i, where in enumerate(["imgs/a.png", "imgs/sub/b.png", "imgs/c.jpg"]):
        Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(project / where)
    (project / "imgs" / "notes.txt").write_text("not an image")
    result = RUN.invoke(app, ["predict", "-m", "t-clf@champion", "-i", "imgs", "-o", "f.csv"])
    assert result.exit_code == 0, result.output
    assert [r["input"] for r in rows(project / "f.csv")] == ["a.png", "c.jpg", "sub/b.png"]


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (
            np.zeros((3, 5, 5), np.float32),
            "rows of shape (5, 5) do not fit the model's input (1, 4, 4)",
        ),
        (np.full((3, 4, 4), np.nan, np.float32), "NaN or infinite"),
    ],
)
def test_a_bad_input_is_refused_and_nothing_is_written(store, array, message):
    project, _, _ = store
    np.savez(project / "bad.npz", x=array)
    result = RUN.invoke(app, ["predict", "-m", "t-clf@champion", "-i", "bad.npz", "-o", "p.csv"])
    assert result.exit_code == 1 and message in said(result)
    assert not list(project.glob("*p.csv*"))  # no output, no temporary file


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


def test_without_a_store_the_commands_say_how_to_make_one(project, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    result = RUN.invoke(app, ["models"])
    assert result.exit_code == 1 and "run the pipeline first" in said(result)
