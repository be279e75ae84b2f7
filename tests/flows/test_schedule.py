"""`make schedule`: the pipeline served as a Prefect deployment on a real (temporary) server.

Starts `prefect server start` on a free loopback port with its own PREFECT_HOME, serves the
deployment with a short interval instead of the cron (`flows.schedule serve --interval`),
waits for a scheduled flow run to complete, triggers one more (`flows.schedule once`, what
`make schedule-once` runs), checks each has its MLflow parent run, then stops both processes
and checks nothing they started is left running.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import psutil
import pytest
import yaml
from mlflow.tracking import MlflowClient

from adaptflow.config import ParamsError, load_params
from adaptflow.data import DataError, prepare_all
from adaptflow.tracking.store import configure

SCHEDULE = {
    "name": "test-schedule",
    "cron": "0 2 * * *",
    "timezone": "Europe/Berlin",
    "profile": "smoke",
    "stages": ["ae"],
    "overrides": [
        "ae.epochs=1",
        "ae.max_train=300",
        "ae.methods=[pca, ae]",
        "ae.archs=[mlp]",
        "ae.seeds=[0]",
        "ae.anomaly_digit=null",
    ],
}


def ignore_sigint() -> None:
    """In the child: SIGINT ignored, as a background job of a non-interactive shell (or a
    service manager) starts it; `serve` must still stop on Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def terminal_signals() -> None:
    """In the child: SIGINT as in a terminal. A background job of a non-interactive shell (as
    CI may start pytest) has SIGINT ignored, and children inherit that."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def session_processes(sid: int) -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter():
        try:
            if os.getsid(p.pid) == sid and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except (ProcessLookupError, psutil.Error):
            continue
    return out


def stop(proc: subprocess.Popen, timeout: float = 90) -> list[psutil.Process]:
    """Ctrl-C (SIGINT) as a user would; returns what is still alive in its session after
    `timeout` (then killed, so a failing test leaves nothing behind), the process itself
    included when it did not exit on its own."""
    sid = os.getsid(proc.pid)
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        pass
    deadline = time.monotonic() + 10
    while session_processes(sid) and time.monotonic() < deadline:
        time.sleep(0.5)
    left = session_processes(sid)
    for p in left:
        p.kill()
    if proc.poll() is None:
        proc.kill()
    return left


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    home = tmp_path_factory.mktemp("prefect-home")
    env = dict(os.environ)
    env |= {
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2",
        "PREFECT_RUNNER_POLL_FREQUENCY": "2",
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }
    env.pop("PREFECT_API_URL", None)
    # an earlier test in this worker process may have pointed MLflow at its own store (MLflow
    # keeps the URI in os.environ): the served runs must use this test project's store
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


@pytest.fixture(scope="module")
def server(env, tmp_path_factory):
    """One Prefect server for this module's tests (each uses its own deployment name)."""
    tmp_path = tmp_path_factory.mktemp("prefect-server")
    port = free_port()
    log = open(tmp_path / "server.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
         "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=terminal_signals,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert proc.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
        time.sleep(1)
    else:
        stop(proc)
        pytest.fail("the Prefect server did not start in 120 s")
    yield url, proc
    left = stop(proc)
    log.close()
    assert not left, f"the Prefect server left processes running: {left}"


@pytest.fixture
def scheduled_project(project):
    raw = yaml.safe_load((project / "params.yaml").read_text())
    raw["schedule"] = SCHEDULE
    (project / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    prepare_all(load_params("params.yaml"), ["mnist"], log=lambda m: None)
    return project


ACTIVE = ("PENDING", "RUNNING")


def api(method: str, url: str, **kwargs) -> httpx.Response:
    """A call to the Prefect server, again while it answers 503 (its sqlite database busy
    under load) for up to 30 s."""
    deadline = time.monotonic() + 30
    while True:
        r = httpx.request(method, url, timeout=10, **kwargs)
        if r.status_code != 503 or time.monotonic() > deadline:
            return r
        time.sleep(1)


def flow_runs(url: str, deployment: str) -> list[dict]:
    body = {"deployments": {"name": {"any_": [deployment]}}, "sort": "EXPECTED_START_TIME_ASC"}
    r = api("POST", f"{url}/flow_runs/filter", json=body)
    r.raise_for_status()
    return r.json()


def test_served_deployment_runs_on_its_schedule_and_stops_cleanly(scheduled_project, server, env):
    url, _ = server
    env = env | {"PREFECT_API_URL": url}
    out = open(scheduled_project / "serve.log", "w")  # noqa: SIM115 - closed below
    serving = subprocess.Popen(
        [sys.executable, "-m", "flows.schedule", "serve", "--interval", "10"],
        cwd=scheduled_project, env=env, stdout=out, stderr=subprocess.STDOUT,
        start_new_session=True, preexec_fn=ignore_sigint,
    )  # fmt: skip

    def log() -> str:
        return (scheduled_project / "serve.log").read_text()[-4000:]

    try:
        completed: list[dict] = []
        deadline = time.monotonic() + 180
        while not completed and time.monotonic() < deadline:
            assert serving.poll() is None, log()
            runs = flow_runs(url, SCHEDULE["name"])
            failed = [r for r in runs if r["state_type"] in ("FAILED", "CRASHED")]
            assert not failed, log()
            completed = [r for r in runs if r["state_type"] == "COMPLETED"]
            time.sleep(2)
        assert completed, f"no scheduled run completed in 180 s\n{log()}"
        scheduled = completed[0]
        assert scheduled["auto_scheduled"] is True  # made by the schedule, not by hand
        deployment = api("GET", f"{url}/deployments/{scheduled['deployment_id']}").json()
        assert deployment["name"] == SCHEDULE["name"]
        assert deployment["parameters"]["overrides"] == ["profile=smoke", *SCHEDULE["overrides"]]
        # pause the schedule (as in the UI) and let a run it already started finish, so the
        # trigger below and the shutdown do not race a scheduled run
        paused = api(
            "PATCH", f"{url}/deployments/{scheduled['deployment_id']}", json={"paused": True}
        )
        assert paused.status_code == 204, paused.text
        # runs scheduled before the pause (the scheduler may still add one it planned just
        # before) are deleted until none is scheduled or running for three polls in a row
        deadline, quiet = time.monotonic() + 150, 0
        while quiet < 3:
            assert time.monotonic() < deadline, f"scheduled runs did not stop\n{log()}"
            pending = [
                r
                for r in flow_runs(url, SCHEDULE["name"])
                if r["state_type"] in (*ACTIVE, "SCHEDULED")
            ]
            for r in pending:
                if r["state_type"] == "SCHEDULED":
                    api("DELETE", f"{url}/flow_runs/{r['id']}")
            quiet = 0 if pending else quiet + 1
            time.sleep(2)

        # `make schedule-once`: a run now, through the same served deployment
        once = subprocess.run(
            [sys.executable, "-m", "flows.schedule", "once"],
            cwd=scheduled_project, env=env, capture_output=True, text=True, timeout=240,
        )  # fmt: skip
        assert once.returncode == 0, once.stdout + once.stderr + log()
        assert "Completed" in once.stdout
    finally:
        left = stop(serving)
        out.close()
    assert not left, f"serve left processes running (itself included if it ignored Ctrl-C): {left}"

    runs = {r["id"]: r for r in flow_runs(url, SCHEDULE["name"])}
    done = [r for r in runs.values() if r["state_type"] == "COMPLETED"]
    assert sum(not r["auto_scheduled"] for r in done) == 1  # the triggered one
    # every completed Prefect run has exactly one MLflow pipeline run, FINISHED, linked by id
    exp = configure(".", "adaptflow-smoke")
    client = MlflowClient()
    for r in done:
        (mlrun,) = client.search_runs([exp], f"tags.`adaptflow.prefect_flow_run` = '{r['id']}'")
        assert mlrun.info.status == "FINISHED"
        assert mlrun.data.tags["adaptflow.prefect_deployment"] == (
            f"adaptflow-pipeline/{SCHEDULE['name']}"
        )
        assert mlrun.data.tags["adaptflow.kind"] == "pipeline"
        assert mlrun.data.tags["adaptflow.profile"] == "smoke"
        # ... and it is the parent of the stage's run, which finished
        (stage,) = client.search_runs([exp], f"tags.`mlflow.parentRunId` = '{mlrun.info.run_id}'")
        assert stage.data.tags["adaptflow.stage"] == "ae" and stage.info.status == "FINISHED"
    assert not [r for r in runs.values() if r["state_type"] in (*ACTIVE, "CRASHED", "FAILED")]
    assert not client.search_runs([exp], "attributes.status = 'RUNNING'")


def test_schedule_refuses_bad_settings_before_serving(project, env, monkeypatch):
    from flows.schedule import ScheduleError, serve

    def with_schedule(**values) -> None:
        raw = yaml.safe_load((project / "params.yaml").read_text())
        raw["schedule"] = values
        (project / "params.yaml").write_text(yaml.safe_dump(raw))

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    with_schedule(cron="every night")
    with pytest.raises(ParamsError, match="schedule.cron = 'every night': not a cron"):
        serve()
    with_schedule(stages=["ae", "gans"])
    with pytest.raises(ParamsError, match=r"unknown stage\(s\) \['gans'\]"):
        serve()
    with pytest.raises(ParamsError, match="schedule.profile: unknown profile 'nightly'"):
        load_params("params.yaml", ["schedule.profile=nightly"])
    with_schedule(stages=["ae"])
    with pytest.raises(DataError, match="make data"):  # prepare has not run
        serve()
    prepare_all(load_params("params.yaml"), ["mnist"], log=lambda m: None)
    with_schedule(stages=["ae"], overrides=["ae.anomaly_digit=12"])  # what each run would use
    with pytest.raises(ParamsError, match="anomaly_digit"):
        serve()
    with_schedule(stages=["ae"])
    with pytest.raises(ScheduleError, match="PREFECT_API_URL is not set.*make prefect-server"):
        serve()
    # the command line: exit 1 and the fix when no server answers at the address
    proc = subprocess.run(
        [sys.executable, "-m", "flows.schedule", "serve"],
        cwd=project, env=env | {"PREFECT_API_URL": f"http://127.0.0.1:{free_port()}/api"},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert "no Prefect server answers" in proc.stderr and "make prefect-server" in proc.stderr
    assert not (project / "mlruns").exists()


def test_schedule_once_refuses_to_wait_for_a_deployment_nobody_serves(project, server, env):
    url, _ = server
    env = env | {"PREFECT_API_URL": url}
    once = [sys.executable, "-m", "flows.schedule", "once"]
    missing = subprocess.run(once, cwd=project, env=env, capture_output=True, text=True)
    assert missing.returncode == 1 and "no deployment adaptflow-pipeline/nightly" in missing.stderr
    # a deployment registered on the server that no process serves (as after `make schedule`
    # stopped): created through the REST API
    flow = api("POST", f"{url}/flows/", json={"name": "adaptflow-pipeline"}).json()
    made = api("POST", f"{url}/deployments/", json={"name": "nightly", "flow_id": flow["id"]})
    assert made.status_code in (200, 201), made.text
    idle = subprocess.run(once, cwd=project, env=env, capture_output=True, text=True)
    assert idle.returncode == 1 and "is not served" in idle.stderr and "--no-wait" in idle.stderr


def test_schedule_once_names_a_server_error_instead_of_a_traceback(project, monkeypatch):
    """A Prefect server that is up but answers 503 (busy, restarting): exit 1, a message."""
    import http.server
    import threading

    from flows.schedule import app
    from typer.testing import CliRunner

    class Busy(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            self.send_response(200 if self.path.endswith("/health") else 503)
            self.end_headers()
            self.wfile.write(b"true" if self.path.endswith("/health") else b"busy")

        def log_message(self, *args):
            pass

    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), Busy) as httpd:
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        monkeypatch.setenv("PREFECT_API_URL", f"http://127.0.0.1:{httpd.server_port}/api")
        result = CliRunner().invoke(app, ["once"])
        httpd.shutdown()
    assert result.exit_code == 1, result.output
    assert "answered 503" in result.output and "Traceback" not in result.output
