"""A pipeline killed in the middle of a later stage (SIGTERM; SIGKILL) and run again: the stages
that finished come from the cache, the interrupted runs end KILLED (never left RUNNING), and
every run, artifact, registered model version and prepared file reads back whole. After a
SIGKILL, Prefect's temporary server is left running, orphaned: the re-run ends it."""

from __future__ import annotations

import os
import signal
import time

import psutil
import pytest
from flows.pipeline import SERVER_NICE

from tests.flows.pipeline_procs import (
    client_of,
    prefect_servers_of,
    read_everything_back,
    start,
    stop_tree,
)

STAGES = ["--stage", "ae", "--stage", "pretrain"]
# smoke's pretrain units last about a second: long enough units that the poll below cannot miss
# them on a fast machine (the CI of stop 22 saw the pipeline end before it saw one RUNNING)
LONGER = ["--set", "pretrain.epochs=30"]


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


# ~1 min each: in `make test-slow` (which CI runs too), outside the fast suite's 10 minutes;
# the signal handling and the reaping are also unit-tested in tests/tracking/test_runs.py
def _nice(tid: int) -> int | None:
    """A thread's nice, None when it ended since it was listed."""
    try:
        return os.getpriority(os.PRIO_PROCESS, tid)
    except ProcessLookupError:
        return None


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_killed_pipeline_resumes_from_the_cache_and_leaves_nothing_running(
    project, prepared_mnist, sig
):
    client = client_of(project)
    first = start(project, prepared_mnist, *STAGES, *LONGER)
    try:
        _wait_for_training_in(client, "pretrain", first)
        # mid-training, Prefect's temporary server runs niced (it would slow the training):
        # every thread of it (a Linux thread's nice is its own), and only it
        servers = prefect_servers_of(first)
        own = os.getpriority(os.PRIO_PROCESS, 0)
        assert psutil.Process(first.pid).nice() == own  # the pipeline itself is not niced
        assert servers, "no Prefect server found under the pipeline"
        niced = {nice for s in servers for t in s.threads() if (nice := _nice(t.id)) is not None}
        assert niced == {max(own, SERVER_NICE)}, niced
        # the temporary server every `adaptflow run` starts listens on loopback only
        pids = {s.pid for s in servers}
        bound = [
            (c.laddr.ip, c.laddr.port)
            for c in psutil.net_connections(kind="tcp")
            if c.pid in pids and c.status == psutil.CONN_LISTEN
        ]
        assert bound and {ip for ip, _ in bound} <= {"127.0.0.1", "::1"}, bound
    except BaseException:
        stop_tree(first, signal.SIGKILL)
        raise
    # a SIGKILL orphans the server (nobody stops it): left running for the re-run to end
    orphans = {s.pid for s in servers} if sig == signal.SIGKILL else set()
    stop_tree(first, sig, keep=frozenset(orphans))
    try:
        _resumes(client, project, prepared_mnist, first, sig, servers)
    finally:
        for s in servers:
            if s.is_running():
                s.kill()


def _said(first) -> str:
    """What the killed pipeline printed. Read without waiting for the end of its output: after a
    SIGKILL the orphaned server still holds the pipe open, so a plain read() would never return."""
    fd = first.stdout.fileno()
    os.set_blocking(fd, False)
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 1 << 16)
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


def _resumes(client, project, prepared_mnist, first, sig, servers) -> None:
    said = _said(first)
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
        assert all(s.is_running() for s in servers)  # orphaned, still up: nobody ended it
        assert killed and {r.info.status for r in killed} == {"RUNNING"}  # nobody closed them
    names = {r.info.run_name for r in killed}
    assert {"pipeline-smoke", "pretrain"} <= names and "ae" not in names, names

    second = start(project, prepared_mnist, *STAGES, *LONGER)
    out, _ = second.communicate(timeout=600)
    assert second.returncode == 0, out
    if sig == signal.SIGKILL:  # the orphaned server was ended by the re-run, before its own
        assert f"ended {len(servers)} temporary Prefect server(s)" in out, out
    assert not [s for s in servers if s.is_running() and s.status() != psutil.STATUS_ZOMBIE]
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
    counted = read_everything_back(client, prepared_mnist)
    assert counted["runs"] > 10 and counted["artifacts"] > 10 and counted["versions"] >= 2
