"""Prefect's temporary servers that a killed run left behind.

Without a Prefect server (PREFECT_API_URL unset) every `adaptflow run` has Prefect start a
temporary one, a child process (uvicorn on PREFECT_HOME's database) that the run stops at its
end. A SIGKILL, an OOM kill or a crash of the run leaves it running, orphaned: it holds the
database open and wakes its loop services (~1.4 CPU s a minute) until someone kills it. The
next run on the same project ends such servers before starting its own.

Identified positively, never guessed from the process table: once its server is up, a run
records it in PREFECT_HOME/adaptflow-servers/<pid>.json (the server's pid and start time, and
its own). A recorded server is ended only when the process that started it is gone (its pid
ended, or now belongs to a process started later) while the server itself is still the one
recorded (same pid, same start time, Prefect's server command line). A live run's server is
never touched, nor a server no adaptflow run recorded (another project's, a notebook's,
`prefect server start`); whatever cannot be read counts as alive. A run killed in the second
between its server starting and the record being written leaves an unrecorded server: missed,
never a live one ended. No Prefect import: `src/` stays Prefect-free."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import psutil

log = logging.getLogger(__name__)

APP = "prefect.server.api.server:create_app"  # in the command line of Prefect's server
RECORDS = "adaptflow-servers"


def _records(home: str | Path) -> Path:
    return Path(home).expanduser() / RECORDS


def _started_at(pid: int) -> float | None:
    """The start time of process `pid`, None when there is none."""
    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None


def record_server(home: str | Path, server_pid: int, owner_pid: int | None = None) -> Path | None:
    """Record that `owner_pid` (default: this process) started the temporary server
    `server_pid` on `home`. Never raises (a server left unrecorded is only not reaped)."""
    owner_pid = os.getpid() if owner_pid is None else owner_pid
    try:
        server, owner = psutil.Process(server_pid), psutil.Process(owner_pid)
        entry = {
            "server_pid": server_pid,
            "server_started": server.create_time(),
            "owner_pid": owner_pid,
            "owner_started": owner.create_time(),
        }
        folder = _records(home)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{server_pid}.json"
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(entry))
        os.replace(tmp, path)  # whole or absent
        return path
    except Exception as e:
        log.debug("could not record Prefect's temporary server %s: %s", server_pid, e)
        return None


def _orphan(entry: dict) -> tuple[psutil.Process | None, bool]:
    """(the recorded server if it is an orphan to end, whether the record is finished with)."""
    server_pid, owner_pid = int(entry["server_pid"]), int(entry["owner_pid"])
    if _started_at(server_pid) != float(entry["server_started"]):
        return None, True  # the server ended (its pid may be another process now)
    try:
        server = psutil.Process(server_pid)
        if APP not in server.cmdline():
            return None, True  # not Prefect's server (cannot be: same pid and start time)
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None, True
    except psutil.AccessDenied:
        return None, False  # unreadable: counts as alive
    if _started_at(owner_pid) == float(entry["owner_started"]):
        return None, False  # its run is alive: its server
    return server, False


def orphan_servers(home: str | Path) -> list[psutil.Process]:
    """The recorded temporary Prefect servers on `home` (a PREFECT_HOME) whose starter is gone.
    Records of servers that ended are removed."""
    found = []
    folder = _records(home)
    if not folder.is_dir():
        return found
    for path in sorted(folder.glob("*.json")):
        try:
            server, done = _orphan(json.loads(path.read_text()))
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.debug("skipping the unreadable server record %s: %s", path, e)
            continue
        if done:
            path.unlink(missing_ok=True)
        elif server is not None:
            found.append(server)
    return found


def reap_orphan_servers(home: str | Path, timeout: float = 5.0) -> int:
    """End the orphaned temporary Prefect servers on `home` (SIGTERM, then SIGKILL after
    `timeout` s); returns how many. Never raises: a server it cannot end is logged."""
    try:
        orphans = orphan_servers(home)
    except Exception as e:  # a records folder it cannot list: not a reason to fail a run
        log.warning("could not look for orphaned Prefect servers: %s", e)
        return 0
    if not orphans:
        return 0
    for proc in orphans:
        try:
            proc.terminate()
        except psutil.NoSuchProcess:
            pass
        except psutil.AccessDenied as e:
            log.warning("could not end the orphaned Prefect server %s: %s", proc.pid, e)
    _, alive = psutil.wait_procs(orphans, timeout=timeout)
    for proc in alive:
        try:
            proc.kill()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    psutil.wait_procs(alive, timeout=timeout)
    for proc in orphans:
        if not proc.is_running():
            (_records(home) / f"{proc.pid}.json").unlink(missing_ok=True)
    log.warning(
        "ended %d temporary Prefect server(s) left running by a killed run on %s (pid %s)",
        len(orphans),
        Path(home),
        ", ".join(str(p.pid) for p in orphans),
    )
    return len(orphans)
