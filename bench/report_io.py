"""How a benchmark's result is written down: bench/results/<name>.md with the commit, date,
machine and wall time in its header, and beside it <name>.code.json, the code its numbers came
from (bench/collect.py reads both to say whether a result is still this code's).

Nothing here decides a number, so a bench's record leaves this module out: changing how a
result is written stales no result."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
# what decides every bench's numbers, besides the bench modules it runs (bench/collect.py adds
# those per bench); a result measured with any of these uncommitted is not a commit's result
CODE = ("src", "flows", "params.yaml", "pyproject.toml", "constraints.txt")
NOT_CODE = (":(exclude)bench/results",)  # the results themselves are not the code behind them

# the code record (<name>.code.json): the repository's files a bench process imported from
# these folders, the files it reads rather than imports, and the prepared data's DVC md5
IMPORTED_FROM = ("src/adaptflow/", "flows/", "bench/")
NOT_NUMBERS = ("bench/results/", "bench/report_io.py", "bench/collect.py")  # what writes/reads
READ = ("params.yaml", "pyproject.toml", "constraints.txt")
PREPARED = "dvc.lock:prepare:data/prepared"  # a pseudo-file: the `prepare` stage's outs md5
# and what is on disk (dvc.lock only says what `dvc repro` last wrote): the prepared manifests,
# each holding its arrays' digests (records from before this entry lack it)
ON_DISK = "data/prepared/*.json"
DURING = "code changed during the run"  # in a result's commit: it is no commit's result


def commit() -> str:
    """The checkout's commit, "+ uncommitted changes" when CODE or bench/ differ from it."""
    import subprocess

    root = RESULTS.parent.parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", *CODE, "bench", *NOT_CODE],
            cwd=root,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return (head or "unknown") + (" + uncommitted changes" if dirty else "")


def changed_during_run(
    root: Path, since: float | None = None, only: list[str] | None = None
) -> list[str]:
    """The code and data files modified (or deleted) after this process started (`since`): an
    edit or a checkout in the middle of a run. The record, written at the end, would credit the
    numbers to code they were not computed with. Code is what git tracks under `only` (the
    files of a code record; default: CODE and bench/ but its results and writers), data the
    files in data/prepared. Conservative: a file touched and put back counts as changed."""
    import subprocess

    if since is None:
        import psutil

        since = psutil.Process().create_time()
    tops = [*CODE, "bench"] if only is None else [f for f in only if f not in (PREPARED, ON_DISK)]
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--", *tops], cwd=root, capture_output=True, text=True
    ).stdout
    files = [f for f in listed.split("\0") if f]
    data = root / "data" / "prepared"
    if data.is_dir():
        files += sorted(f.relative_to(root).as_posix() for f in data.rglob("*") if f.is_file())
    changed = []
    for rel in files:
        if rel.startswith(NOT_NUMBERS):
            continue
        try:
            if (root / rel).stat().st_mtime > since:
                changed.append(rel)
        except FileNotFoundError:
            changed.append(rel + " (deleted)")
    return changed


def markdown_table(table) -> str:
    """A rich Table as a markdown table (its title above it in bold)."""
    cols = table.columns
    lines = [f"**{table.title}**", ""] if table.title else []
    lines += ["| " + " | ".join(str(c.header) for c in cols) + " |"]
    lines += ["|" + "|".join("---" for _ in cols) + "|"]
    for i in range(table.row_count):
        lines.append("| " + " | ".join(str(list(c.cells)[i]) for c in cols) + " |")
    return "\n".join(lines)


def machine() -> str:
    """The CPU model, its logical CPUs, torch's thread count and any GPU: the numbers depend on
    them (a CPU's float kernels move rendered data and training; threads move verdicts)."""
    import os
    import platform
    import re

    import torch

    model = platform.processor() or platform.machine() or "unknown CPU"
    try:
        found = re.search(r"(?m)^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text())
        model = found[1].strip() if found else model
    except OSError:
        pass
    threads = torch.get_num_threads()
    where = f"{model}, {os.cpu_count()} CPUs, {threads} thread{'s' * (threads != 1)}"
    if torch.cuda.is_available():
        where += f", {torch.cuda.get_device_name(0)}"
    return re.sub(r"[;<>]", " ", where)  # kept out of the header's delimiters


def blob_hash(path: Path) -> str | None:
    """The file's git blob id (what `git hash-object` prints), None when there is no file."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def prepared_md5(root: Path) -> str | None:
    """The md5 dvc.lock records for the `prepare` stage's data/prepared (None: not recorded)."""
    import yaml

    try:
        lock = yaml.safe_load((root / "dvc.lock").read_text()) or {}
    except FileNotFoundError:
        return None
    outs = lock.get("stages", {}).get("prepare", {}).get("outs", [])
    return next((o.get("md5") for o in outs if o.get("path") == "data/prepared"), None)


def prepared_on_disk(root: Path) -> str | None:
    """One hash of the prepared manifests on disk (names and contents), None without any."""
    manifests = sorted((root / "data" / "prepared").glob("*.json"))
    if not manifests:
        return None
    listing = "".join(f"{m.name} {blob_hash(m)}\n" for m in manifests)
    return hashlib.sha1(listing.encode()).hexdigest()


def current(entry: str, root: Path) -> str | None:
    """What a code record's entry is in the checkout at `root` now."""
    if entry == PREPARED:
        return prepared_md5(root)
    if entry == ON_DISK:
        return prepared_on_disk(root)
    return blob_hash(root / entry)


def imported_files(root: Path) -> list[str]:
    """This process's imported modules that are files of the repository at `root` (relative)."""
    root = root.resolve()
    found = set()
    for module in list(sys.modules.values()):  # list: an import in another thread resizes it
        file = getattr(module, "__file__", None)
        if not file:
            continue
        try:
            rel = Path(file).resolve().relative_to(root).as_posix()
        except ValueError:  # outside the repository (site-packages, the stdlib)
            continue
        if rel.startswith(IMPORTED_FROM) and not rel.startswith(NOT_NUMBERS):
            found.add(rel)
    return sorted(found)


def code_record(root: Path) -> dict[str, str | None]:
    """Every file behind this process's numbers and the prepared data, with their hashes."""
    record = {path: blob_hash(root / path) for path in {*imported_files(root), *READ}}
    record[PREPARED] = prepared_md5(root)
    record[ON_DISK] = prepared_on_disk(root)
    return dict(sorted(record.items()))


def save_result(
    name: str, body: str, seconds: float, extra: str = "", coarse: str | None = None
) -> Path:
    """bench/results/<name>.md: what `make bench-<name>` measured, with the date, the commit and
    the wall time (bench/collect.py gathers these into the README's Results section); and
    <name>.code.json, the code record that decides whether it is current.

    `coarse`: why this process's imports are not all the code behind the numbers (the bench
    runs code in child processes); the record then says so, and the result is judged by its
    commit against all of CODE and its bench modules."""
    import datetime

    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.md"
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    where = machine()
    root = RESULTS.parent.parent
    if coarse is None:
        files = code_record(root)
        used = list(files)
    else:  # the code a child process may run (CODE) and the bench modules this one imported
        files = None
        used = [*CODE, *(f for f in imported_files(root) if f.startswith("bench/"))]
    during = changed_during_run(root, only=used)
    sha = commit() + (f" + {DURING} ({', '.join(during[:3])})" if during else "")
    head = (
        f"<!-- bench: {name}; commit: {sha}; date: {when}; machine: {where} -->\n"
        f"`make bench-{name}` on {when}, commit {sha}, wall {seconds / 60:.1f} min"
        f"{extra}; machine: {where}.\n\n"
    )
    path.write_text(head + body.strip() + "\n")
    if coarse is None:
        about = (
            f"the code behind {path.name}: the git blob id of each repository file the bench "
            "process imported or read, and the prepared data's dvc.lock md5"
        )
        record = {"about": about, "files": files}
    else:
        record = {"about": f"{path.name} is judged by its commit", "coarse": coarse}
    sidecar = RESULTS / f"{name}.code.json"
    sidecar.write_text(json.dumps(record, indent=1) + "\n")
    return path
