"""Orphaned temporary Prefect servers: only those a dead run recorded on this project are ended.

The "servers" are sleeping Pythons whose command line looks like the server Prefect starts
(`... -m uvicorn --factory prefect.server.api.server:create_app`); the "runs" that started
them are this (live) process or a process that has ended. The end-to-end case (a real server
a SIGKILLed pipeline left, ended by the re-run) is in tests/flows/test_kill_resume.py."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time

import psutil
import pytest

from adaptflow.prefect_server import (
    APP,
    RECORDS,
    orphan_servers,
    reap_orphan_servers,
    record_server,
)

SLEEP = [sys.executable, "-c", "import time; time.sleep(120)", "-m", "uvicorn", "--factory", APP]


def _start(cmd: list[str]) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # until the command line is the new program's
        try:
            if cmd[-1] in psutil.Process(proc.pid).cmdline():
                return proc
        except psutil.NoSuchProcess:
            break
        time.sleep(0.05)
    raise RuntimeError(f"{cmd} did not start")


@pytest.fixture
def procs():
    started: list[subprocess.Popen] = []
    yield started
    for p in started:
        p.kill()
        p.wait(10)


def _record_dead_owner(home, server: subprocess.Popen) -> None:
    """A record as a run writes it, whose run has ended since (a SIGKILL)."""
    path = record_server(home, server.pid)  # written by this (live) process...
    entry = json.loads(path.read_text())
    owner = subprocess.Popen([sys.executable, "-c", "pass"])
    owner.wait(30)
    entry["owner_pid"] = owner.pid  # ...then handed to one that is gone
    path.write_text(json.dumps(entry))


def test_only_a_recorded_server_whose_run_is_gone_is_ended(tmp_path, caplog, procs):
    home, other = tmp_path / ".prefect", tmp_path / "other" / ".prefect"
    ours, live, foreign, unrecorded, reused = (_start(SLEEP) for _ in range(5))
    procs += [ours, live, foreign, unrecorded, reused]
    not_a_server = _start([sys.executable, "-c", "import time; time.sleep(120)", "-x"])
    procs.append(not_a_server)
    _record_dead_owner(home, ours)
    record_server(home, live.pid)  # its run (this process) is alive
    _record_dead_owner(other, foreign)  # another project's orphan
    # a record whose pid now belongs to another process (the server ended, its pid reused)
    _record_dead_owner(home, reused)
    entry = json.loads((home / RECORDS / f"{reused.pid}.json").read_text())
    entry["server_started"] -= 100
    (home / RECORDS / f"{reused.pid}.json").write_text(json.dumps(entry))
    # a record pointing at a process that is not Prefect's server
    _record_dead_owner(home, not_a_server)

    assert [p.pid for p in orphan_servers(home)] == [ours.pid]
    assert not (home / RECORDS / f"{reused.pid}.json").exists()  # finished with: removed
    with caplog.at_level(logging.WARNING, logger="adaptflow.prefect_server"):
        assert reap_orphan_servers(home) == 1
    assert "ended 1 temporary Prefect server(s)" in caplog.text
    assert ours.wait(10) is not None  # ended
    for p in (live, foreign, unrecorded, reused, not_a_server):
        assert p.poll() is None, p.args  # left running
    assert not (home / RECORDS / f"{ours.pid}.json").exists()
    assert (home / RECORDS / f"{live.pid}.json").exists()  # still its run's
    assert reap_orphan_servers(home) == 0  # nothing left to end: silent


def test_no_records_a_broken_record_and_a_missing_home_are_no_error(tmp_path):
    assert reap_orphan_servers(tmp_path / "missing") == 0
    (tmp_path / RECORDS).mkdir()
    (tmp_path / RECORDS / "123.json").write_text("{not json")
    (tmp_path / RECORDS / "124.json").write_text('{"server_pid": 1}')
    assert reap_orphan_servers(tmp_path) == 0
