"""A team tracking server on this machine: PostgreSQL holds runs and the registry, `mlflow server`
serves the REST API, the UI and the artifacts (uploaded through it into a folder). Both listen on
127.0.0.1 only.

    python -m adaptflow.tracking.server start [--port 5001] [--pg-port 5433] [--dir .tracking]
    export MLFLOW_TRACKING_URI=http://127.0.0.1:5001    # adaptflow run / models / predict use it
    python -m adaptflow.tracking.server status
    python -m adaptflow.tracking.server stop

<dir> (default .tracking under the project root, git-ignored) holds:

    pg/            the PostgreSQL cluster, initdb'd on the first start
    artifacts/     what clients log (`--serve-artifacts --artifacts-destination`)
    pg.pass        the generated password of the cluster's `mlflow` role, in libpq's passfile
                   format (mode 0600): libpq reads it through PGPASSFILE, so the password is in
                   no URI, command line or log
    mlflow.pid     the `mlflow server` process (leader of its own process group)
    server.json    the URI and ports of the running server
    mlflow.log, postgres.log

PostgreSQL refuses to run as root: as root, its commands run as the `postgres` system user (which
Debian's `postgresql` package creates) and pg/ belongs to that user. Its binaries come from PG_BIN,
else PATH, else Debian's /usr/lib/postgresql/<version>/bin.
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

HOST = "127.0.0.1"
ROLE = "mlflow"  # the cluster's superuser, the one account MLflow connects as
DATABASE = "mlflow"  # where MLflow's tables live
PG_SYSTEM_USER = "postgres"
PG_TOOLS = ("initdb", "pg_ctl", "postgres")
DEBIAN_PG_BIN = "/usr/lib/postgresql/*/bin"
_SOCKET_PATH_MAX = 107  # sun_path: PostgreSQL refuses longer Unix socket paths


class ServerError(RuntimeError):
    """The server cannot be started, stopped or inspected as asked; the message names the fix."""


@dataclass(frozen=True)
class Layout:
    """Where one tracking server keeps its state (see the module docstring)."""

    root: Path

    @classmethod
    def at(cls, state_dir: Path | str) -> Layout:
        return cls(Path(state_dir).resolve())

    @property
    def pg_data(self) -> Path:
        return self.root / "pg"

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    @property
    def passfile(self) -> Path:
        return self.root / "pg.pass"

    @property
    def pid_file(self) -> Path:
        return self.root / "mlflow.pid"

    @property
    def state_file(self) -> Path:
        return self.root / "server.json"

    @property
    def mlflow_log(self) -> Path:
        return self.root / "mlflow.log"

    @property
    def pg_log(self) -> Path:
        return self.root / "postgres.log"


@dataclass(frozen=True)
class Status:
    """What runs from one state folder (`status()`)."""

    uri: str | None  # the server's URI when its process is running
    pid: int | None
    healthy: bool  # /health answered
    stale_pid: int | None  # mlflow.pid names a process that is gone (or is not mlflow)
    pg_pid: int | None  # PostgreSQL's postmaster, when running
    pg_port: int | None


def _no_log(message: str) -> None:
    pass


def _shown(path: Path) -> str:
    """`path` relative to the cwd when it is below it (.tracking/pg), else absolute."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


# ---------------------------------------------------------------------------------------------
# the Python API (the CLI below and tests/tracking/test_remote_tracking.py use these)


def start(
    state_dir: Path | str = ".tracking",
    port: int = 5001,
    pg_port: int = 5433,
    timeout: float = 120.0,
    log: Callable[[str], None] = _no_log,
) -> str:
    """Start PostgreSQL (initdb'ing the cluster when absent) and `mlflow server` on it; returns
    the tracking URI once /health answers. A server already running from `state_dir` is kept
    (its URI is returned, whatever the ports asked)."""
    layout = Layout.at(state_dir)
    layout.root.mkdir(parents=True, exist_ok=True)
    now = status(layout.root)
    if now.uri is not None:
        log(f"mlflow server already running: {now.uri} (pid {now.pid})")
        return now.uri
    if now.stale_pid is not None:
        if _group_exists(now.stale_pid):  # its leader died; uvicorn may be left in the group
            _terminate_group(now.stale_pid)
        log(f"removed a stale {_shown(layout.pid_file)} (pid {now.stale_pid} is not running)")
        _forget(layout)
    if _port_in_use(port):
        raise ServerError(
            f"port {port} on {HOST} is in use: pick another for the mlflow server (--port, or "
            f"TRACKING_PORT=... with make)"
        )
    if now.pg_pid is None and _port_in_use(pg_port):
        raise ServerError(
            f"port {pg_port} on {HOST} is in use: pick another for PostgreSQL (--pg-port, or "
            "PG_PORT=... with make)"
        )
    bin_dir = find_pg_bin()
    user = _pg_user()
    if not (layout.pg_data / "PG_VERSION").exists():
        _init_cluster(layout, bin_dir, user, log)
    was_running = now.pg_pid is not None
    pg_port = _start_postgres(layout, bin_dir, user, pg_port, log)
    try:
        _ensure_database(layout, pg_port)
        return _start_mlflow(layout, port, pg_port, timeout, log)
    except BaseException:
        if not was_running:  # leave nothing behind that this call started
            _pg(bin_dir, "pg_ctl", "-D", layout.pg_data, "-w", "stop", "-m", "fast", check=False)
        raise


def stop(state_dir: Path | str = ".tracking", log: Callable[[str], None] = _no_log) -> None:
    """Stop the mlflow server (its whole process group), then PostgreSQL (`pg_ctl stop -m fast`:
    open connections are closed, nothing is lost). Stopping what is not running is no error."""
    layout = Layout.at(state_dir)
    now = status(layout.root)
    if now.pid is not None:
        _terminate_group(now.pid)
        log(f"mlflow server stopped (pid {now.pid})")
    elif now.stale_pid is not None:
        if _group_exists(now.stale_pid):  # its leader died; uvicorn may be left in the group
            _terminate_group(now.stale_pid)
        log(f"removed a stale {_shown(layout.pid_file)} (pid {now.stale_pid} was not running)")
    else:
        log("mlflow server: not running")
    _forget(layout)
    if now.pg_pid is not None:
        _pg(find_pg_bin(), "pg_ctl", "-D", layout.pg_data, "-w", "-t", "60", "stop", "-m", "fast")
        log(f"postgres stopped (pid {now.pg_pid})")
    else:
        log("postgres: not running")


def status(state_dir: Path | str = ".tracking") -> Status:
    """What runs from `state_dir` now; reads the pid files and asks /health, changes nothing."""
    layout = Layout.at(state_dir)
    pid = _read_pid(layout.pid_file)
    alive = pid is not None and _is_mlflow_server(pid)
    uri = _read_state(layout).get("uri") if alive else None
    pg_pid, pg_port = _postmaster(layout)
    return Status(
        uri=uri,
        pid=pid if alive else None,
        healthy=uri is not None and _healthy(uri),
        stale_pid=pid if pid is not None and not alive else None,
        pg_pid=pg_pid,
        pg_port=pg_port,
    )


def pg_dsn(state_dir: Path | str = ".tracking", port: int | None = None) -> str:
    """A libpq connection string to the server's database (e.g. for psycopg2.connect)."""
    layout = Layout.at(state_dir)
    port = port or _postmaster(layout)[1]
    if port is None:
        raise ServerError(f"postgres of {layout.root} is not running: start the server first")
    return _dsn(layout, port, DATABASE)


# ---------------------------------------------------------------------------------------------
# PostgreSQL


def find_pg_bin() -> Path:
    """The folder holding initdb, pg_ctl and postgres: PG_BIN, else PATH, else the newest
    /usr/lib/postgresql/<version>/bin (Debian keeps them off PATH)."""
    candidates = []
    if os.environ.get("PG_BIN"):
        candidates.append(Path(os.environ["PG_BIN"]))
    if on_path := shutil.which("initdb"):
        candidates.append(Path(on_path).resolve().parent)
    debian = sorted(Path("/").glob(DEBIAN_PG_BIN.lstrip("/")), key=_version_key, reverse=True)
    for folder in [*candidates, *debian]:
        if all((folder / tool).is_file() for tool in PG_TOOLS):
            return folder
    raise ServerError(
        f"PostgreSQL server binaries ({', '.join(PG_TOOLS)}) not found in PG_BIN, on PATH or in "
        f"{DEBIAN_PG_BIN}: install Debian's `postgresql` package (apt-get install postgresql), "
        "or set PG_BIN to the folder holding them"
    )


def _version_key(folder: Path) -> tuple[int, ...]:
    version = folder.parent.name
    return tuple(int(p) for p in version.split(".") if p.isdigit())


def _pg_user() -> pwd.struct_passwd | None:
    """The account PostgreSQL runs as: `postgres` when we are root (it refuses root), else us."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        raise ServerError(
            f"running as root, which PostgreSQL refuses, and there is no `{PG_SYSTEM_USER}` "
            "user to run it as: install Debian's `postgresql` package (it creates that user), "
            "or run this as a normal user"
        ) from None


def _as_pg_user(cmd: list[str]) -> subprocess.CompletedProcess:
    """Run `cmd` as the account PostgreSQL runs as (see `_pg_user`), output captured."""
    user = _pg_user()
    as_user = (
        {} if user is None else {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
    )
    return subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        cwd="/",  # the postgres user may not be allowed into our cwd
        env={**os.environ, "LC_ALL": "C.UTF-8"},
        **as_user,
    )


def _pg(bin_dir: Path, tool: str, *args, check: bool = True) -> subprocess.CompletedProcess:
    """Run a PostgreSQL tool as the account PostgreSQL runs as; a clear error when it fails."""
    proc = _as_pg_user([str(bin_dir / tool), *map(str, args)])
    if check and proc.returncode != 0:
        raise ServerError(
            f"{tool} failed ({proc.returncode}): {(proc.stderr or proc.stdout).strip()}"
        )
    return proc


def _own(path: Path, user: pwd.struct_passwd | None) -> None:
    if user is not None:
        os.chown(path, user.pw_uid, user.pw_gid)


def _init_cluster(layout: Layout, bin_dir: Path, user, log) -> None:
    """initdb with a generated password for the `mlflow` superuser; TCP and local connections
    both need it (scram-sha-256), so no other account on this machine gets in."""
    data = layout.pg_data
    if data.exists() and any(data.iterdir()):
        raise ServerError(
            f"{data} is not empty but holds no PostgreSQL cluster (no PG_VERSION): move it away"
        )
    data.mkdir(parents=True, exist_ok=True)
    _own(data, user)
    if user is not None and _as_pg_user(["test", "-w", str(data)]).returncode != 0:
        raise ServerError(
            f"the `{PG_SYSTEM_USER}` user cannot reach {data}: every folder above it must be "
            "searchable by others (chmod o+x), e.g. not inside a 0700 home or temp folder"
        )
    password = secrets.token_urlsafe(24)  # [A-Za-z0-9_-]: nothing to escape in a passfile
    fd, pwfile = tempfile.mkstemp(dir=layout.root, prefix=".initdb-")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(password + "\n")
        _own(Path(pwfile), user)
        _pg(
            bin_dir,
            "initdb",
            "-D",
            data,
            "-U",
            ROLE,
            "--pwfile",
            pwfile,
            "--auth-host=scram-sha-256",
            "--auth-local=scram-sha-256",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
            "--no-instructions",
        )
    finally:
        Path(pwfile).unlink(missing_ok=True)
    _write_private(layout.passfile, f"{HOST}:*:*:{ROLE}:{password}\n")
    with open(data / "postgresql.conf", "a") as f:  # our settings, rewritten at every start
        f.write("\ninclude_if_exists = 'adaptflow.conf'\n")
    log(
        f"postgres: initialised {_shown(data)} (role `{ROLE}`, password in {_shown(layout.passfile)})"
    )


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def _guc_quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _start_postgres(layout: Layout, bin_dir: Path, user, port: int, log) -> int:
    """Start the cluster on 127.0.0.1:port with its Unix socket inside pg/; returns the port it
    listens on (that of an already running cluster, which is kept)."""
    pid, running_port = _postmaster(layout)
    if pid is not None and running_port is not None:
        log(f"postgres already running on {HOST}:{running_port} (pid {pid})")
        return running_port
    socket_path = layout.pg_data / f".s.PGSQL.{port}"
    if len(str(socket_path)) > _SOCKET_PATH_MAX:
        raise ServerError(
            f"{socket_path} is longer than a Unix socket path may be ({_SOCKET_PATH_MAX}): "
            "use a shorter --dir"
        )
    conf = layout.pg_data / "adaptflow.conf"
    conf.write_text(
        "# written by adaptflow.tracking.server at every start\n"
        f"listen_addresses = {_guc_quote(HOST)}\n"
        f"port = {port}\n"
        f"unix_socket_directories = {_guc_quote(str(layout.pg_data))}\n"
    )
    _own(conf, user)
    layout.pg_log.touch()
    _own(layout.pg_log, user)  # pg_ctl opens it as the postgres user
    proc = _pg(
        bin_dir, "pg_ctl", "-D", layout.pg_data, "-l", layout.pg_log, "-w", "-t", "60", "start",
        check=False,
    )  # fmt: skip
    pid, running_port = _postmaster(layout)
    if proc.returncode != 0 or pid is None:
        raise ServerError(
            f"postgres did not start ({proc.stderr.strip() or proc.stdout.strip()}); "
            f"the end of {_shown(layout.pg_log)}:\n{_tail(layout.pg_log)}"
        )
    log(f"postgres: running on {HOST}:{running_port} (pid {pid}, log {_shown(layout.pg_log)})")
    return running_port


def _postmaster(layout: Layout) -> tuple[int | None, int | None]:
    """(pid, port) from PostgreSQL's own postmaster.pid when that process is alive."""
    try:
        lines = (layout.pg_data / "postmaster.pid").read_text().splitlines()
        pid, port = int(lines[0]), int(lines[3])
    except (OSError, ValueError, IndexError):
        return None, None
    return (pid, port) if _alive(pid) else (None, None)


def _dsn(layout: Layout, port: int, dbname: str) -> str:
    passfile = str(layout.passfile).replace("\\", "\\\\").replace("'", "\\'")  # libpq quoting
    return (
        f"host={HOST} port={port} user={ROLE} dbname={dbname} "
        f"passfile='{passfile}' connect_timeout=10"
    )


def _ensure_database(layout: Layout, pg_port: int) -> None:
    try:
        import psycopg2
    except ImportError:
        raise ServerError(
            "psycopg2 is not installed: pip install -e '.[remote]' (MLflow reaches PostgreSQL "
            "through it)"
        ) from None
    con = psycopg2.connect(_dsn(layout, pg_port, "postgres"))
    try:
        con.autocommit = True  # CREATE DATABASE cannot run inside a transaction
        with con.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,))
            if cur.fetchone() is None:
                cur.execute(f'CREATE DATABASE "{DATABASE}"')
    finally:
        con.close()


# ---------------------------------------------------------------------------------------------
# mlflow server


def backend_store_uri(pg_port: int) -> str:
    """No password in it: libpq reads it from PGPASSFILE (see `_start_mlflow`)."""
    return f"postgresql+psycopg2://{ROLE}@{HOST}:{pg_port}/{DATABASE}"


def _start_mlflow(layout: Layout, port: int, pg_port: int, timeout: float, log) -> str:
    layout.artifacts.mkdir(parents=True, exist_ok=True)
    uri = f"http://{HOST}:{port}"
    cmd = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", backend_store_uri(pg_port),
        "--serve-artifacts", "--artifacts-destination", str(layout.artifacts),
        "--host", HOST, "--port", str(port),
        "--workers", "1",  # one uvicorn process: a team of a few, on a small machine
        # only this address (the default also admits private-network Host headers)
        "--allowed-hosts", f"{HOST}:{port},localhost:{port}",
    ]  # fmt: skip
    env = {
        **os.environ,
        "PGPASSFILE": str(layout.passfile),
        "MLFLOW_DISABLE_TELEMETRY": "true",
        # the GenAI job runner (huey consumers) is not used by adaptflow: one process less
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    with open(layout.mlflow_log, "ab") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=layout.root,  # anything mlflow writes beside it stays in <dir>
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: `stop` ends it and its children
        )
    layout.pid_file.write_text(f"{proc.pid}\n")
    state = {"uri": uri, "port": port, "pg_port": pg_port, "pid": proc.pid}
    layout.state_file.write_text(json.dumps(state, indent=2) + "\n")
    deadline = time.monotonic() + timeout
    while not _healthy(uri):
        if proc.poll() is not None or time.monotonic() > deadline:
            why = "exited" if proc.poll() is not None else f"did not answer within {timeout:g} s"
            _terminate_group(proc.pid)
            _forget(layout)
            raise ServerError(
                f"mlflow server {why}; the end of {_shown(layout.mlflow_log)}:\n{_tail(layout.mlflow_log)}"
            )
        time.sleep(0.5)
    log(f"mlflow server: {uri} (pid {proc.pid}, log {_shown(layout.mlflow_log)})")
    log(f"artifacts: {_shown(layout.artifacts)}")
    return uri


def _healthy(uri: str) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxy
    try:
        with opener.open(f"{uri}/health", timeout=2) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _terminate_group(pgid: int, grace: float = 15.0) -> None:
    """SIGTERM to the process group `pgid` (the mlflow server leads its own: it forwards the
    signal to uvicorn), SIGKILL after `grace` seconds; returns once none of them is left."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            _reap(pgid)
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
    raise ServerError(f"the mlflow server's processes (group {pgid}) did not stop, even on SIGKILL")


def _group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _reap(pid: int) -> None:
    """Collect `pid` when it is our own child (started in this process), so it is not a zombie."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


# ---------------------------------------------------------------------------------------------
# pid files, ports


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _read_state(layout: Layout) -> dict:
    try:
        return json.loads(layout.state_file.read_text())
    except (OSError, ValueError):
        return {}


def _forget(layout: Layout) -> None:
    layout.pid_file.unlink(missing_ok=True)
    layout.state_file.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's (postgres when we are not root)
        return True
    stat = Path(f"/proc/{pid}/stat")  # a zombie (exited, not yet reaped) is not alive
    try:
        return stat.read_text().rsplit(")", 1)[-1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _is_mlflow_server(pid: int) -> bool:
    """Alive and an `mlflow server`, not another process that got the pid since."""
    if not _alive(pid):
        return False
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return True  # no /proc: trust the pid file
    return b"mlflow" in b" ".join(argv) and b"server" in argv


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is not "in use"
        try:
            s.bind((HOST, port))
        except OSError:
            return True
    return False


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) or "(empty)"
    except OSError:
        return "(no log)"


# ---------------------------------------------------------------------------------------------
# command line

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__.split("\n\n")[0])
DirOpt = Annotated[Path, typer.Option("--dir", help="state folder (cluster, artifacts, logs)")]


def _echo(message: str) -> None:
    typer.echo(message, err=True)


def _fail(e: ServerError) -> None:
    typer.echo(f"error: {e}", err=True)
    raise typer.Exit(1)


@app.command("start")
def start_cmd(
    state_dir: DirOpt = Path(".tracking"),
    port: Annotated[int, typer.Option(help="mlflow server port on 127.0.0.1")] = 5001,
    pg_port: Annotated[int, typer.Option(help="PostgreSQL port on 127.0.0.1")] = 5433,
    timeout: Annotated[float, typer.Option(help="seconds to wait for /health")] = 120.0,
) -> None:
    """Start PostgreSQL and the mlflow server (initdb on the first start); prints the URI."""
    try:
        uri = start(state_dir, port, pg_port, timeout, log=_echo)
    except ServerError as e:
        _fail(e)
    typer.echo(f"export MLFLOW_TRACKING_URI={uri}")


@app.command("stop")
def stop_cmd(state_dir: DirOpt = Path(".tracking")) -> None:
    """Stop the mlflow server, then PostgreSQL."""
    try:
        stop(state_dir, log=_echo)
    except ServerError as e:
        _fail(e)


@app.command("status")
def status_cmd(state_dir: DirOpt = Path(".tracking")) -> None:
    """What runs from --dir; exit 1 unless the server is up and healthy."""
    s = status(state_dir)
    layout = Layout.at(state_dir)
    if s.uri is not None:
        health = "healthy" if s.healthy else "NOT answering /health"
        typer.echo(f"mlflow server  {s.uri}  pid {s.pid}  {health}")
    elif s.stale_pid is not None:
        typer.echo(
            f"mlflow server  not running (stale {_shown(layout.pid_file)}: pid {s.stale_pid})"
        )
    else:
        typer.echo("mlflow server  not running")
    if s.pg_pid is not None:
        typer.echo(
            f"postgres       {HOST}:{s.pg_port}  pid {s.pg_pid}  data {_shown(layout.pg_data)}"
        )
    else:
        typer.echo("postgres       not running")
    typer.echo(f"artifacts      {_shown(layout.artifacts)}")
    if not s.healthy:
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
