"""A registered model loads in a fresh process from its models:/ URI with only what it declares.

A real fresh virtualenv is too heavy here (torch alone is ~5 GB), so the fresh process runs in
this venv and checks instead that every distribution loading + predicting imports (beyond what
`import mlflow.pyfunc, mlflow.pytorch` already imports) is in the model's requirements.txt or
is installed by one of them (pip's dependency closure). `rich` missing from pip_requirements()
(the Trainer imports it) fails this test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import mlflow
import numpy as np
import torch

from adaptflow.config import MnistSource
from adaptflow.data.base import SOURCES
from adaptflow.methods.ae import AE_METHODS
from adaptflow.models.factory import NetSpec
from adaptflow.models.stacked import DeepClassifier, StackedEncoder
from adaptflow.tracking import models
from adaptflow.tracking.store import configure

CHILD = textwrap.dedent(
    """
    import importlib.metadata as md, json, sys
    import mlflow.pyfunc, mlflow.pytorch
    before = set(sys.modules)
    import numpy as np
    import torch
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name as canon

    uris, x_path, out_path = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
    x = np.load(x_path)
    outputs, codes, declared = {}, {}, set()
    for uri in uris:
        net = mlflow.pytorch.load_model(uri)
        with torch.no_grad():
            y = net(torch.from_numpy(x)).numpy()
            if hasattr(net, "encode"):  # later stages use the AE's encoder, not only forward()
                codes[uri] = list(net.encode(torch.from_numpy(x)).shape)
        y_pyfunc = mlflow.pyfunc.load_model(uri).predict(x)
        outputs[uri] = [y.tolist(), np.asarray(y_pyfunc).tolist()]
        with open(mlflow.pyfunc.get_model_dependencies(uri)) as f:
            declared |= {canon(Requirement(r).name) for r in f.read().split() if r}

    def closure(names):
        seen, todo = set(), list(names)
        while todo:
            name = todo.pop()
            if name in seen:
                continue
            seen.add(name)
            try:
                reqs = md.requires(name) or []
            except md.PackageNotFoundError:
                continue
            for r in map(Requirement, reqs):
                if r.marker is None or r.marker.evaluate({"extra": ""}):
                    todo.append(canon(r.name))
        return seen

    import adaptflow
    tops = {m.split(".")[0] for m in set(sys.modules) - before}
    tops -= set(sys.stdlib_module_names) | {"adaptflow"}  # adaptflow ships as code_paths
    dists = md.packages_distributions()
    used = {canon(d) for t in tops for d in dists.get(t, [])}
    missing = sorted(used - closure(declared))
    with open(out_path, "w") as f:
        json.dump({"outputs": outputs, "codes": codes, "missing": missing, "used": sorted(used),
                   "adaptflow": adaptflow.__file__}, f)
    """
)


def nets() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    spec = NetSpec((1, 28, 28), hidden=(16,), conv_channels=(4, 8), code_size=4)
    conv = NetSpec((1, 28, 28), "conv", conv_channels=(4, 8), code_size=4)
    return {
        "ae-mlp": AE_METHODS.get("ae")(spec),
        "ae-conv": AE_METHODS.get("ae")(conv),
        "vae-mlp": AE_METHODS.get("vae")(spec),
        "pretrain": DeepClassifier(StackedEncoder(784, [16, 8]), 10),
    }


def test_registered_models_load_in_a_fresh_process_with_their_requirements(project):
    configure(".", "models")
    x = SOURCES.get("mnist")(MnistSource(kind="mnist"), 0).x_test[:5]
    expected, uris = {}, []
    for name, net in nets().items():
        with mlflow.start_run():
            uri = models.log_torch_model(net, x[:2])
        version = mlflow.register_model(uri, f"t-{name}", await_registration_for=0).version
        uris.append(f"models:/t-{name}/{version}")
        with torch.no_grad():
            expected[uris[-1]] = net.eval()(torch.from_numpy(x)).numpy()
    np.save(project / "x.npy", x)
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow.get_tracking_uri()}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(uris), "x.npy", "out.json"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((project / "out.json").read_text())
    assert report["missing"] == [], f"imported but not in requirements: {report['missing']}"
    assert "torch" in report["used"]  # the import scan sees the model's own imports
    assert not report["adaptflow"].startswith(str(models.Path(models.__file__).parents[1]))
    ae_uris = sorted(u for u in uris if "/t-ae-" in u or "/t-vae-" in u)
    assert sorted(report["codes"]) == ae_uris
    assert all(shape == [5, 4] for shape in report["codes"].values()), report["codes"]
    for uri, (y, y_pyfunc) in report["outputs"].items():
        assert np.asarray(y).shape[0] == 5
        np.testing.assert_allclose(y, expected[uri], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(y_pyfunc, expected[uri], rtol=1e-5, atol=1e-6)
