"""The prepared data travels through DVC remotes: a local folder, and S3 (moto on loopback).

Every test works in a temporary git clone of this project with its own DVC cache, site cache,
config dirs and remotes; the checkout's data/prepared is only read (copied), never changed.
Before each pull the data and the DVC cache are deleted: what comes back came from the remote.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from .conftest import REPO

PREPARED = Path("data/prepared")
UP_TO_DATE = "Data and pipelines are up to date."


@dataclass(frozen=True)
class Template:
    """A clone whose data/prepared is committed to its DVC cache (dvc.lock matches it)."""

    root: Path
    sha256: dict[str, str]  # file name -> digest, to compare what a pull brings back
    dir_md5: str  # dvc.lock's hash of the directory listing (an object of its own, ".dir")
    objects: set[str]  # the remote's keys under files/: every file's md5 and the .dir listing


def digests(folder: Path, algo: str = "sha256") -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.new(algo, p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def object_key(md5: str) -> str:
    return f"md5/{md5[:2]}/{md5[2:]}"  # DVC 3's layout: <remote>/files/md5/ab/cdef...


def hermetic_env(root: Path) -> dict[str, str]:
    """DVC and boto see no user config, no real AWS credentials and no proxy; analytics off."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "DVC_")) and not k.lower().endswith("_proxy")
    }
    env.update(
        DVC_NO_ANALYTICS="1",
        DVC_SITE_CACHE_DIR=str(root / "dvc-site-cache"),
        DVC_GLOBAL_CONFIG_DIR=str(root / "dvc-global"),
        DVC_SYSTEM_CONFIG_DIR=str(root / "dvc-system"),
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_CONFIG_FILE=str(root / "aws" / "config"),  # both absent: ~/.aws never leaks in
        AWS_SHARED_CREDENTIALS_FILE=str(root / "aws" / "credentials"),
        AWS_EC2_METADATA_DISABLED="true",
        # `dvc repro prepare` runs `adaptflow`, installed beside this interpreter
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    return env


def dvc(cwd: Path, *args: str, env: dict, expect: int | None = 0, timeout: float = 180):
    proc = subprocess.run(
        [sys.executable, "-m", "dvc", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if expect is not None:
        assert proc.returncode == expect, (
            f"`dvc {' '.join(args)}` exited {proc.returncode} (expected {expect})\n"
            f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    return proc


def said(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout + proc.stderr


def wipe_local_copies(root: Path) -> None:
    shutil.rmtree(root / PREPARED)
    shutil.rmtree(root / ".dvc" / "cache")


@pytest.fixture(scope="session")
def dvc_env(tmp_path_factory) -> dict[str, str]:
    return hermetic_env(tmp_path_factory.mktemp("dvc-env"))


def build_template(root: Path, env: dict) -> None:
    subprocess.run(["git", "clone", "-q", str(REPO), str(root)], check=True, timeout=120)
    checkout_data = REPO / PREPARED
    if any(checkout_data.glob("*.json")):  # copied, not hardlinked: DVC cannot reach its files
        # a `make data` running there may leave its in-flight .<name>.tmp files: not data
        shutil.copytree(checkout_data, root / PREPARED, ignore=shutil.ignore_patterns(".*.tmp"))
        dvc(root, "commit", "-f", "prepare", env=env)
    else:  # a fresh clone (CI): prepare it as `make data` does (~20 s)
        dvc(root, "repro", "prepare", env=env, timeout=900)
    assert UP_TO_DATE in dvc(root, "status", "prepare", env=env).stdout


@pytest.fixture(scope="session")
def template(tmp_path_factory, dvc_env) -> Template:
    """Built once per session: xdist workers share it (under a lock); tests only copy it."""
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # the session's folder, above each worker's own
    root, ready = shared / "dvc-remote-template", shared / "dvc-remote-template.ready"
    with open(shared / "dvc-remote-template.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not ready.exists():
            shutil.rmtree(root, ignore_errors=True)  # a worker that failed half-way
            build_template(root, dvc_env)
            ready.touch()
    lock_file = yaml.safe_load((root / "dvc.lock").read_text())
    (out,) = lock_file["stages"]["prepare"]["outs"]
    md5s = digests(root / PREPARED, "md5")
    return Template(
        root=root,
        sha256=digests(root / PREPARED),
        dir_md5=out["md5"],
        objects={object_key(m) for m in md5s.values()} | {object_key(out["md5"])},
    )


@pytest.fixture
def clone(template, tmp_path) -> Path:
    """A private copy of the template: its cache, data and config are the test's own."""
    root = tmp_path / "adaptflow"
    shutil.copytree(template.root, root, symlinks=True)
    return root


@pytest.fixture(scope="module")
def moto_url(tmp_path_factory, dvc_env):
    """An S3-compatible server on loopback (`moto_server`), on a port the OS picked."""
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", "0"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dvc_env,
        )
    try:
        deadline = time.monotonic() + 60
        while not (found := re.search(r"Running on (http://127\.0\.0\.1:\d+)", log.read_text())):
            assert proc.poll() is None, f"moto_server exited {proc.returncode}:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"moto_server not up in 60 s:\n{log.read_text()}"
            time.sleep(0.1)
        yield found.group(1)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            pytest.fail(f"moto_server ignored SIGTERM for 15 s:\n{log.read_text()}")


@pytest.fixture(scope="module")
def s3(moto_url, dvc_env):
    """A boto3 client of moto, made under the same AWS_* settings DVC sees (and no others)."""
    import boto3

    with pytest.MonkeyPatch.context() as mp:  # a session reads env vars and config files when made
        for key in [k for k in os.environ if k.startswith("AWS_")]:
            mp.delenv(key)
        for key, value in dvc_env.items():
            if key.startswith("AWS_"):
                mp.setenv(key, value)
        return boto3.session.Session().client("s3", endpoint_url=moto_url)


def add_s3_remote(root: Path, env: dict, name: str, bucket: str, endpoint: str) -> None:
    dvc(root, "remote", "add", "-d", name, f"s3://{bucket}/dvc", env=env)
    dvc(root, "remote", "modify", name, "endpointurl", endpoint, env=env)


def bucket_objects(s3, bucket: str) -> set[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="dvc/files/")
    return {o["Key"].removeprefix("dvc/files/") for page in pages for o in page.get("Contents", [])}


def pushed_to_s3(clone: Path, env: dict, s3, moto_url: str) -> str:
    bucket = f"adaptflow-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    add_s3_remote(clone, env, "s3remote", bucket, moto_url)
    dvc(clone, "push", env=env)
    return bucket


def pull_brings_back_every_byte(clone: Path, env: dict, template: Template) -> None:
    wipe_local_copies(clone)
    assert "not in cache" in dvc(clone, "status", "prepare", env=env).stdout
    dvc(clone, "pull", env=env)
    assert digests(clone / PREPARED) == template.sha256
    assert UP_TO_DATE in dvc(clone, "status", "prepare", env=env).stdout


def test_local_folder_remote_push_then_pull_restores_every_file(clone, template, dvc_env, tmp_path):
    remote = tmp_path / "remote"
    dvc(clone, "remote", "add", "-d", "shared", str(remote), env=dvc_env)
    dvc(clone, "push", env=dvc_env)
    held = {p.relative_to(remote / "files").as_posix() for p in remote.rglob("*") if p.is_file()}
    assert held == template.objects
    assert (
        "Cache and remote 'shared' are in sync." in dvc(clone, "status", "-c", env=dvc_env).stdout
    )
    pull_brings_back_every_byte(clone, dvc_env, template)


def test_s3_remote_push_then_pull_restores_every_file(clone, template, dvc_env, s3, moto_url):
    bucket = pushed_to_s3(clone, dvc_env, s3, moto_url)
    assert bucket_objects(s3, bucket) == template.objects
    assert (
        "Cache and remote 's3remote' are in sync." in dvc(clone, "status", "-c", env=dvc_env).stdout
    )
    pull_brings_back_every_byte(clone, dvc_env, template)


def test_pull_from_a_remote_missing_one_object_fails_and_checks_out_nothing(
    clone, template, dvc_env, s3, moto_url
):
    """DVC fetches every file it can but checks out no partial data/prepared."""
    bucket = pushed_to_s3(clone, dvc_env, s3, moto_url)
    md5s = digests(clone / PREPARED, "md5")
    lost = max(md5s, key=lambda name: (clone / PREPARED / name).stat().st_size)
    s3.delete_object(Bucket=bucket, Key=f"dvc/files/{object_key(md5s[lost])}")
    wipe_local_copies(clone)
    proc = dvc(clone, "pull", env=dvc_env, expect=1)
    assert f"failed to transfer '{md5s[lost]}'" in proc.stderr, said(proc)
    assert not (clone / PREPARED).exists()
    cache = clone / ".dvc" / "cache" / "files"
    held = {p.relative_to(cache).as_posix() for p in cache.rglob("*") if p.is_file()}
    # every other file is kept for the next pull; the listing is cached once the whole dir is
    assert held == template.objects - {object_key(md5s[lost]), object_key(template.dir_md5)}
    assert "not in cache" in dvc(clone, "status", "prepare", env=dvc_env).stdout


def test_pull_from_a_missing_bucket_fails_and_checks_out_nothing(
    clone, template, dvc_env, moto_url
):
    """DVC reads the absent bucket as an absent directory listing: it names the .dir object as
    missing on the remote and exits 1 (its stdout still says "Everything is up to date.")."""
    add_s3_remote(clone, dvc_env, "s3remote", f"absent-{uuid.uuid4().hex[:12]}", moto_url)
    wipe_local_copies(clone)
    proc = dvc(clone, "pull", env=dvc_env, expect=1)
    assert f"md5: {template.dir_md5}" in proc.stderr, said(proc)
    assert "Checkout failed for following targets:\ndata/prepared" in proc.stderr, said(proc)
    assert not (clone / PREPARED).exists()
    assert "not in cache" in dvc(clone, "status", "prepare", env=dvc_env).stdout


def test_pull_from_an_unreachable_s3_server_fails_and_checks_out_nothing(clone, dvc_env):
    # botocore's default 5 attempts with exponential backoff take 5-35 s to give up here
    env = {**dvc_env, "AWS_MAX_ATTEMPTS": "1"}
    with socket.socket() as closed:  # bound, never listening: connections are refused
        closed.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{closed.getsockname()[1]}"
        add_s3_remote(clone, env, "s3remote", "adaptflow-data", endpoint)
        wipe_local_copies(clone)
        proc = dvc(clone, "pull", env=env, expect=1)
    assert f'Could not connect to the endpoint URL: "{endpoint}/adaptflow-data/' in proc.stderr, (
        said(proc)
    )
    assert not (clone / PREPARED).exists()
    assert "not in cache" in dvc(clone, "status", "prepare", env=env).stdout
