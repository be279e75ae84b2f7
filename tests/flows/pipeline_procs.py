"""Pipelines as separate processes (`adaptflow run`), for the kill and concurrency tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil


def start(project, prepared, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """`adaptflow run --set profile=smoke <args>` on `prepared` data in `project`, started now
    (`env`: more environment variables)."""
    cmd = [sys.executable, "-m", "adaptflow.cli", "run", "--no-progress", "--set", "profile=smoke"]
    cmd += [*args, "--set", f"data.prepared_dir={prepared}"]
    environ = {
        k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_TRACKING", "PREFECT_API"))
    }
    environ["PREFECT_HOME"] = str(project / ".prefect")
    return subprocess.Popen(
        cmd,
        cwd=project,
        env=environ | (env or {}),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def prefect_servers_of(proc: subprocess.Popen) -> list[psutil.Process]:
    """The temporary Prefect server(s) the pipeline `proc` started."""
    found = []
    for child in psutil.Process(proc.pid).children(recursive=True):
        try:
            if "prefect.server.api.server" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.NoSuchProcess:
            pass
    return found


def client_of(project):
    """A client of `project`'s local store (it need not exist yet)."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(f"sqlite:///{project / 'mlruns' / 'mlflow.db'}")


def stop_tree(proc: subprocess.Popen, sig: int, keep: frozenset[int] = frozenset()) -> None:
    """Send `sig` to the pipeline, wait for it, then SIGKILL whatever of its tree is left but
    the processes `keep` (pids: e.g. the server a SIGKILL orphans, for the re-run to end)."""
    try:
        tree = [proc.pid, *(p.pid for p in psutil.Process(proc.pid).children(recursive=True))]
    except psutil.NoSuchProcess:  # it ended (and was reaped) already
        return
    os.kill(proc.pid, sig)
    try:
        proc.wait(120)
    finally:
        for pid in set(tree) - keep:  # what a SIGKILL orphans (Prefect's temporary server)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _local_artifacts(uri: str) -> Path:
    """The folder of a run's artifacts in the local store (file:// or a plain path)."""
    from urllib.parse import unquote, urlparse

    parsed = urlparse(uri)
    return Path(unquote(parsed.path) if parsed.scheme == "file" else uri)


def _parses(name: str, data: bytes) -> None:
    import json

    import yaml

    text = data.decode()
    json.loads(text) if name.endswith(".json") else yaml.safe_load(text)


def read_everything_back(client, prepared) -> dict[str, int]:
    """Read every run, every artifact (whole, its size against the listing; JSON/YAML/MLmodel
    parsed), registered version (loaded) and prepared file (digest checked) back; nothing may be left RUNNING or not READY. Returns the counts."""
    import mlflow

    from adaptflow.data.prepare import load_prepared

    exps = [e.experiment_id for e in client.search_experiments()]
    counted = {"runs": 0, "artifacts": 0, "versions": 0}
    for r in client.search_runs(exps, max_results=10_000):
        run = client.get_run(r.info.run_id)
        assert run.info.status != "RUNNING", (run.info.run_name, run.data.tags)
        root = _local_artifacts(run.info.artifact_uri)
        stack = [None]
        while stack:
            for a in client.list_artifacts(r.info.run_id, stack.pop()):
                if a.is_dir:
                    stack.append(a.path)
                    continue
                data = (root / a.path).read_bytes()  # read whole: none truncated or missing
                assert len(data) == a.file_size, (run.info.run_name, a.path, len(data))
                if a.path.endswith((".json", ".yaml", ".yml", "MLmodel")):
                    _parses(a.path, data)
                counted["artifacts"] += 1
        counted["runs"] += 1
    for m in client.search_registered_models():
        for v in client.search_model_versions(f"name = '{m.name}'"):
            assert v.status == "READY", (m.name, v.version, v.status)
            mlflow.pytorch.load_model(client.get_model_version_download_uri(m.name, v.version))
            counted["versions"] += 1
    for manifest in prepared.glob("*.json"):
        load_prepared(prepared, manifest.stem, verify=True)  # digest checked
    return counted
