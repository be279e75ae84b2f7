"""A pipeline killed in the middle of a later stage (SIGTERM; SIGKILL) and run again: the stages
that finished come from the cache, the interrupted runs end KILLED (never left RUNNING), and
every run, artifact, registered model version and prepared file reads back whole."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

STAGES = ["--stage", "ae", "--stage", "pretrain"]
# smoke's pretrain units last about a second: long enough units that the poll below cannot miss
# them on a fast machine (the CI of stop 22 saw the pipeline end before it saw one RUNNING)
LONGER = ["--set", "pretrain.epochs=30"]


def _start(project, prepared) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "adaptflow.cli", "run", "--no-progress", *STAGES]
    cmd += ["--set", "profile=smoke", *LONGER, "--set", f"data.prepared_dir={prepared}"]
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_TRACKING", "PREFECT_API"))
    }
    env["PREFECT_HOME"] = str(project / ".prefect")
    return subprocess.Popen(
        cmd,
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def _client(project):
    from mlflow.tracking import MlflowClient

    return MlflowClient(f"sqlite:///{project / 'mlruns' / 'mlflow.db'}")


def _wait_for_training_in(client, stage: str, proc, timeout: float = 240.0) -> None:
    """Until a unit run of `stage` is RUNNING (the stage is mid-training)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the pipeline ended ({proc.returncode}) first: {proc.stdout.read()}")
        try:
            exps = [e.experiment_id for e in client.search_experiments()]
            found = client.search_runs(
                exps, f"attributes.status = 'RUNNING' and attributes.run_name LIKE '{stage}/%'"
            )
        except Exception:  # the store is being created
            found = []
        if found:
            return
        time.sleep(0.3)
    pytest.fail(f"no {stage} unit started within {timeout:.0f} s")


def _stop_tree(proc: subprocess.Popen, sig: int) -> None:
    try:
        tree = [proc.pid, *(p.pid for p in psutil.Process(proc.pid).children(recursive=True))]
    except psutil.NoSuchProcess:  # it ended (and was reaped) already
        return
    os.kill(proc.pid, sig)
    try:
        proc.wait(120)
    finally:
        for pid in tree:  # what a SIGKILL orphans (Prefect's temporary server)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _read_everything_back(client, prepared) -> dict[str, int]:
    import mlflow

    from adaptflow.data.prepare import load_prepared

    exps = [e.experiment_id for e in client.search_experiments()]
    counted = {"runs": 0, "artifacts": 0, "versions": 0}
    for r in client.search_runs(exps, max_results=10_000):
        run = client.get_run(r.info.run_id)
        assert run.info.status != "RUNNING", (run.info.run_name, run.data.tags)
        stack = [None]
        while stack:
            for a in client.list_artifacts(r.info.run_id, stack.pop()):
                stack.append(a.path) if a.is_dir else None
                counted["artifacts"] += not a.is_dir
        counted["runs"] += 1
    for m in client.search_registered_models():
        for v in client.search_model_versions(f"name = '{m.name}'"):
            assert v.status == "READY", (m.name, v.version, v.status)
            mlflow.pytorch.load_model(client.get_model_version_download_uri(m.name, v.version))
            counted["versions"] += 1
    for manifest in prepared.glob("*.json"):
        load_prepared(prepared, manifest.stem, verify=True)  # digest checked
    return counted


# ~1 min each: in `make test-slow` (which CI runs too), outside the fast suite's 10 minutes;
# the signal handling and the reaping are also unit-tested in tests/tracking/test_runs.py
@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_killed_pipeline_resumes_from_the_cache_and_leaves_nothing_running(
    project, prepared_mnist, sig
):
    client = _client(project)
    first = _start(project, prepared_mnist)
    try:
        _wait_for_training_in(client, "pretrain", first)
    except BaseException:
        _stop_tree(first, signal.SIGKILL)
        raise
    _stop_tree(first, sig)
    said = first.stdout.read()
    exps = [e.experiment_id for e in client.search_experiments()]
    killed = client.search_runs(exps, "attributes.status != 'FINISHED'")
    if sig == signal.SIGTERM:
        assert first.returncode == 143, said
        assert "stopped by SIGTERM" in said and "run the same command again" in said
        # ended at once by the process itself: nothing RUNNING, even before a re-run
        assert killed and {r.info.status for r in killed} == {"KILLED"}, said
        assert all("SIGTERM" in r.data.tags["adaptflow.error"] for r in killed)
    else:
        assert first.returncode == -signal.SIGKILL
        assert killed and {r.info.status for r in killed} == {"RUNNING"}  # nobody closed them
    names = {r.info.run_name for r in killed}
    assert {"pipeline-smoke", "pretrain"} <= names and "ae" not in names, names

    second = _start(project, prepared_mnist)
    out, _ = second.communicate(timeout=600)
    assert second.returncode == 0, out
    for r in killed:
        after = client.get_run(r.info.run_id)
        assert after.info.status == "KILLED", (r.info.run_name, after.info.status)
        if sig == signal.SIGKILL:
            assert "ended without closing it" in after.data.tags["adaptflow.error"]
    pipelines = client.search_runs(exps, "attributes.run_name = 'pipeline-smoke'")
    newest = max(pipelines, key=lambda r: r.info.start_time)
    stages = {
        r.info.run_name: r
        for r in client.search_runs(exps, f"tags.`mlflow.parentRunId` = '{newest.info.run_id}'")
    }
    assert stages["ae"].data.tags["adaptflow.cache_hit"] == "true"  # finished: reused
    assert stages["pretrain"].data.tags["adaptflow.cache_hit"] == "false"  # killed: redone
    assert stages["pretrain"].info.status == "FINISHED"
    counted = _read_everything_back(client, prepared_mnist)
    assert counted["runs"] > 10 and counted["artifacts"] > 10 and counted["versions"] >= 2
