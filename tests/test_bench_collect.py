"""bench/collect.py: the README's Results section from bench/results/, with each result's commit
and whether it is current, stale or missing."""

from __future__ import annotations

import importlib
import importlib.util
import json
import subprocess
import sys

import pytest
from bench import collect, report_io


@pytest.fixture
def results(tmp_path, monkeypatch):
    folder = tmp_path / "results"
    monkeypatch.setattr(report_io, "RESULTS", folder)
    monkeypatch.setattr(collect, "RESULTS", folder)
    return folder


def test_results_are_collected_with_their_commit_state_and_references(results, tmp_path):
    report_io.save_result("trainer", "**table**\n\n| a | b |\n|---|---|\n| 1 | 2 |", 61.0)
    report_io.save_result("gan", "# GAN report\n\n![curve](curve.png)", 30.0)
    report_io.save_result("da-syn2mnist-jda_m2u", "# DA\n\nsyn2mnist numbers", 10.0)
    stale = results / "seq.md"
    stale.write_text("<!-- bench: seq; commit: 0000000; date: 2026-01-01 00:00 UTC -->\nold\n")
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{collect.BEGIN}\nold text\n{collect.END}\nrest\n")
    collect.main(["--readme", str(readme)])
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith(f"{collect.END}\nrest\n")
    assert "old text" not in text
    row = next(line for line in text.splitlines() if line.startswith("| Trainer efficiency |"))
    code = collect.read_code(results / "trainer.md")
    state = collect.freshness(report_io.commit(), ("trainer_overhead",), code)
    assert row.endswith(f"| {report_io.commit()} | {report_io.machine()} | {state} |"), row
    assert " thread" in report_io.machine() and ";" not in report_io.machine()
    old = (
        "| Sequence models | 2026-01-01 00:00 UTC | 0000000 | not recorded | commit 0000000 is not"
    )
    assert old in text  # a result from before the header named its machine
    assert "| Autoencoders | not yet | – | – | run `make bench-ae` |" in text
    assert "| Domain adaptation (da-syn2mnist-jda_m2u) |" in text and "syn2mnist numbers" in text
    assert "`make bench-da PAIRS=syn2mnist,jda_m2u` on " in text  # the command that reruns it
    assert "#### GAN report" in text  # nested under the bench's own heading
    assert "![curve](bench/results/curve.png)" in text  # relative to the README
    assert "![curve](curve.png)" in (results / "REPORT.md").read_text()  # relative to itself
    if collect.REFERENCES.is_file():  # ../shared beside the checkout: published numbers beside
        assert "Lucic et al. 2018" in text and "Greydanus" in text


def test_a_result_without_its_header_or_a_readme_without_markers_is_refused(results, tmp_path):
    results.mkdir()
    (results / "ae.md").write_text("numbers from somewhere\n")
    with pytest.raises(SystemExit, match="no bench header"):
        collect.report(base="")
    (results / "ae.md").unlink()
    readme = tmp_path / "README.md"
    readme.write_text("no markers\n")
    with pytest.raises(SystemExit, match="markers"):
        collect.main(["--readme", str(readme)])
    assert readme.read_text() == "no markers\n"


def test_headings_are_nested_but_not_inside_code():
    text = "# Title\n```\n# a comment\n```\n## Sub\n##### Deep"
    assert collect.demote(text) == "#### Title\n```\n# a comment\n```\n##### Sub\n###### Deep"
    assert collect.demote("#### Already\n##### Sub") == "#### Already\n##### Sub"


def _git(repo, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=repo,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def test_a_result_is_current_only_while_the_code_behind_it_is_unchanged(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    (repo / "src").mkdir(parents=True)
    (repo / "bench").mkdir()

    def git(*args: str) -> str:
        return _git(repo, *args)

    def commit(path: str, text: str) -> str:
        (repo / path).write_text(text)
        git("add", "-A")
        git("commit", "-qm", path)
        return git("rev-parse", "--short", "HEAD")

    git("init", "-q")
    (repo / "bench" / "y_sweep.py").write_text("y")
    first = commit("src/a.py", "a = 1\n")
    commit("README.md", "words")  # not code
    monkeypatch.setattr(collect, "REPO", repo)
    x, y = ("x_sweep", "common"), ("y_sweep",)
    assert collect.freshness(first, x) == "current"
    commit("bench/x_sweep.py", "x = 2\n")  # the bench's own module
    assert collect.freshness(first, x) == f"stale: bench/x_sweep.py changed since {first}"
    assert collect.freshness(first, y) == "current"  # another bench's module
    head = commit("bench/common.py", "shared = 1\n")
    assert collect.freshness(first, x).startswith("stale: bench/common.py, bench/x_sweep.py")
    assert collect.freshness(first, y) == "current"  # y does not run bench/common.py
    commit("src/a.py", "a = 3\n")
    assert collect.freshness(head, y) == f"stale: src/a.py changed since {head}"
    (repo / "params.yaml").write_text("changed: true\n")
    git("add", "params.yaml")
    now = git("rev-parse", "--short", "HEAD")
    assert collect.freshness(now, y) == "stale: the checkout has uncommitted changes to the code"
    assert collect.freshness(f"{now} + uncommitted changes", y).startswith("measured with")
    git("commit", "-qm", "params")
    now = git("rev-parse", "--short", "HEAD")
    assert collect.freshness(now, y) == "current"
    (repo / "src" / "new.py").write_text("b = 1\n")  # untracked code counts too
    assert collect.freshness(now, y) == "stale: the checkout has uncommitted changes to the code"
    assert collect.freshness("0000000", y) == "commit 0000000 is not in this repository"


def test_a_result_measured_with_any_uncommitted_code_says_so(tmp_path, monkeypatch):
    """report_io.commit() (what a result records) and collect (what judges it) read one CODE list:
    an uncommitted pin is as much "uncommitted changes" as uncommitted src."""
    repo = tmp_path / "repo"
    (repo / "bench" / "results").mkdir(parents=True)
    run = dict(cwd=repo, check=True, capture_output=True)
    subprocess.run(["git", "init", "-q"], **run)
    for path in ("pyproject.toml", "constraints.txt", "bench/results/x.md", "README.md"):
        (repo / path).write_text("v1\n")
    subprocess.run(["git", "add", "-A"], **run)
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c"], **run
    )
    monkeypatch.setattr(report_io, "RESULTS", repo / "bench" / "results")
    assert not report_io.commit().endswith("uncommitted changes")
    (repo / "README.md").write_text("v2\n")  # not code
    (repo / "bench" / "results" / "x.md").write_text("v2\n")  # a result, not code
    assert not report_io.commit().endswith("uncommitted changes")
    for path in ("pyproject.toml", "constraints.txt"):
        (repo / path).write_text("v2\n")
        assert report_io.commit().endswith(" + uncommitted changes"), path
        (repo / path).write_text("v1\n")


def test_a_result_with_a_code_record_is_stale_only_when_what_it_used_changes(tmp_path, monkeypatch):
    """The record names the repository files the bench process imported (and params, pins, the
    prepared data's md5): a change elsewhere in the code stales it not, one of them does, even
    one the coarse rule does not look at (a helper module, dvc.lock). A result without a record,
    or with a "coarse" one (a bench running code in child processes), keeps the coarse rule."""
    repo = tmp_path / "repo"
    for folder in ("src/adaptflow", "bench"):
        (repo / folder).mkdir(parents=True)

    def git(*args: str) -> str:
        return _git(repo, *args)

    def commit(path: str, text: str | None) -> None:
        if text is None:
            (repo / path).unlink()
        else:
            (repo / path).write_text(text)
        git("add", "-A")
        git("commit", "-qm", path)

    lock = "stages:\n  prepare:\n    outs:\n    - path: data/prepared\n      md5: {}.dir\n"
    files = {
        "src/adaptflow/used.py": "a = 1\n",  # imported by the bench
        "src/adaptflow/unused.py": "b = 1\n",  # code (src), not imported
        "bench/probe.py": "c = 1\n",  # the bench's module: the coarse rule's too
        "bench/helper.py": "d = 1\n",  # imported by the bench, unknown to the coarse rule
        "params.yaml": "p: 1\n",
        "dvc.lock": lock.format("a" * 32),
    }
    git("init", "-q")
    for path, text in files.items():
        (repo / path).write_text(text)
    git("add", "-A")
    git("commit", "-qm", "first")
    first = git("rev-parse", "--short", "HEAD")
    manifest = repo / "data" / "prepared" / "mnist.json"  # git-ignored in a real checkout
    manifest.parent.mkdir(parents=True)
    manifest.write_text('{"sha256": "aa"}')
    for path in ("src/adaptflow/used.py", "bench/probe.py", "bench/helper.py"):
        name = "probe_" + path.replace("/", "_").removesuffix(".py")
        spec = importlib.util.spec_from_file_location(name, repo / path)
        monkeypatch.setitem(sys.modules, name, importlib.util.module_from_spec(spec))
    monkeypatch.setattr(report_io, "RESULTS", repo / "bench" / "results")
    monkeypatch.setattr(report_io, "changed_during_run", lambda root, **_: [])  # test files
    monkeypatch.setattr(collect, "REPO", repo)
    modules = ("probe",)  # what BENCHES would list for it
    results = repo / "bench" / "results"
    report_io.save_result("probe", "numbers", 1.0)
    report_io.save_result("pipe", "numbers", 1.0, coarse="it runs code in child processes")
    (results / "plain.md").write_text((results / "probe.md").read_text())  # no record

    def state(name: str) -> str:
        return collect.read_result(results / f"{name}.md", modules).state

    recorded = json.loads((results / "probe.code.json").read_text())["files"]
    assert sorted(recorded) == [
        "bench/helper.py",
        "bench/probe.py",
        "constraints.txt",
        "data/prepared/*.json",
        "dvc.lock:prepare:data/prepared",
        "params.yaml",
        "pyproject.toml",
        "src/adaptflow/used.py",
    ]
    assert recorded["bench/helper.py"] == git("hash-object", "bench/helper.py")
    assert recorded["constraints.txt"] is None  # absent then: absent now is no change
    assert "files" not in json.loads((results / "pipe.code.json").read_text())
    assert [state(n) for n in ("probe", "pipe", "plain")] == ["current"] * 3

    commit("src/adaptflow/unused.py", "b = 2\n")  # code, but not this bench's
    assert state("probe") == "current"
    coarse = f"stale: src/adaptflow/unused.py changed since {first}"
    assert state("pipe") == state("plain") == coarse
    commit("bench/helper.py", "d = 2\n")
    assert state("probe") == f"stale: bench/helper.py changed since {first}"
    (repo / "bench" / "helper.py").write_text(files["bench/helper.py"])  # back, uncommitted
    assert state("probe") == "current"  # the files as they are, not the commits
    commit("bench/helper.py", files["bench/helper.py"])
    commit("dvc.lock", lock.format("b" * 32))  # other prepared data
    assert state("probe") == f"stale: the prepared data (dvc.lock) changed since {first}"
    commit("dvc.lock", files["dvc.lock"])
    manifest.write_text('{"sha256": "bb"}')  # data made again outside dvc: dvc.lock unchanged
    on_disk = "the prepared data on disk (data/prepared, `make data`)"
    assert state("probe") == f"stale: {on_disk} changed since {first}"
    manifest.write_text('{"sha256": "aa"}')
    assert state("probe") == "current"
    commit("bench/helper.py", None)
    assert state("probe") == f"stale: bench/helper.py (deleted) changed since {first}"
    assert state("plain") == coarse  # the coarse rule: helper.py is not among its modules
    (repo / "params.yaml").write_text("p: 2\n")
    (repo / "src" / "adaptflow" / "used.py").write_text("a = 2\n")
    (repo / "bench" / "probe.py").write_text("c = 2\n")
    assert state("probe") == (
        "stale: bench/helper.py (deleted), bench/probe.py, params.yaml and 1 more changed "
        f"since {first}"
    )


def test_params_count_only_in_the_part_a_bench_reads(tmp_path, monkeypatch):
    """A bench reads params.yaml through its profile and its stages' sections: a default
    another profile overrides, or another stage's section, stales it not; its own section, a
    shared key (data) or text that no longer resolves does. Checked on the real params.yaml."""
    import yaml

    repo = tmp_path / "repo"
    repo.mkdir()
    real = (report_io.RESULTS.parent.parent / "params.yaml").read_text()
    (repo / "params.yaml").write_text(real)
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "params")
    monkeypatch.setattr(collect, "REPO", repo)
    files = {"params.yaml": report_io.blob_hash(repo / "params.yaml")}
    raw = yaml.safe_load(real)
    assert "epochs" in raw["profiles"]["bench"]["seq"]  # the bench overrides seq.epochs

    def state(edit, reads) -> str:
        tree = yaml.safe_load(real)
        edit(tree)
        (repo / "params.yaml").write_text(yaml.safe_dump(tree, sort_keys=False))
        return collect._recorded(files, "abc1234", reads)

    def seq_epochs(tree):
        tree["seq"]["epochs"] += 1

    stale = "stale: params.yaml changed since abc1234"
    assert state(lambda t: None, ("bench", ("seq",))) == "current"  # reformatted, same params
    assert state(seq_epochs, ("bench", ("seq",))) == "current"  # the bench's own value wins
    assert state(seq_epochs, ("default", ("seq",))) == stale  # the default is what it reads
    assert state(seq_epochs, ("default", ("gan",))) == "current"  # another stage's section
    assert state(seq_epochs, None) == stale  # no reads given: the whole file counts

    def image_models_swapped(tree):
        models = tree["seq"]["image_models"]
        tree["seq"]["image_models"] = dict(reversed(list(models.items())))

    assert len(raw["seq"]["image_models"]) > 1
    assert state(image_models_swapped, ("bench", ("seq",))) == stale  # order decides the runs

    def own_profile(tree):
        tree["profile"] = "smoke"

    assert state(own_profile, ("default", ("seq",))) == "current"  # it forces its profile
    assert state(own_profile, (None, ("seq",))) == stale  # it runs the file's own profile

    def bench_gan(tree):
        tree["profiles"]["bench"]["gan"]["epochs"] += 1

    assert state(bench_gan, ("bench", ("gan",))) == stale
    assert state(bench_gan, ("default", ("gan",))) == "current"

    def data(tree):
        tree["data"]["sources"]["mnist"]["test_fraction"] = 0.3

    assert state(data, ("bench", ("seq",))) == stale  # outside every stage section: everyone's

    def broken(tree):
        tree["seq"]["epochs"] = "many"

    assert state(broken, ("default", ("gan",))) == stale  # does not resolve: a change
    (repo / "params.yaml").write_text(real)
    assert collect._recorded({"params.yaml": "0" * 40}, "abc1234", ("bench", ("gan",))) == stale


def test_every_stage_section_is_known_to_the_params_reads():
    from adaptflow.config import Params

    stages = {
        name for name, field in Params.model_fields.items() if "Stage" in str(field.annotation)
    }
    assert stages | {"transfer"} == set(collect.SECTIONS)
    for _, _, _, _, reads in collect.BENCHES:
        assert reads is None or set(reads[1]) <= set(collect.SECTIONS)


def test_the_code_record_holds_what_this_process_imported_but_not_the_reporting():
    importlib.import_module("bench.common")  # as a stage bench does (it writes through it)
    root = report_io.RESULTS.parent.parent
    record = report_io.code_record(root)
    assert list(record) == sorted(record)
    assert "bench/common.py" in record and "src/adaptflow/env.py" in record  # imported here
    assert "bench/report_io.py" not in record and "bench/collect.py" not in record
    assert not [k for k in record if k.startswith(("tests/", ".venv/", "bench/results/"))]
    for path in ("bench/common.py", "params.yaml"):
        git = subprocess.run(
            ["git", "hash-object", path], cwd=root, capture_output=True, text=True, check=True
        )
        assert record[path] == git.stdout.strip(), path


def test_a_file_changed_while_a_bench_ran_marks_its_result_stale(tmp_path, monkeypatch):
    """The record is written when a run ends: an edit or a checkout in the middle of it would
    otherwise credit the numbers to code they were not computed with."""
    import os
    import time

    repo = tmp_path / "repo"
    for d in ("src", "bench/results", "data/prepared"):
        (repo / d).mkdir(parents=True)
    for path in ("src/a.py", "bench/x_sweep.py", "data/prepared/d.npz", "README.md"):
        (repo / path).write_text("v1\n")
    run = dict(cwd=repo, check=True, capture_output=True)
    subprocess.run(["git", "init", "-q"], **run)
    subprocess.run(["git", "add", "src", "bench", "README.md"], **run)
    started = time.time()

    def touch(path: str, text: str, after: bool = True) -> None:
        (repo / path).write_text(text)
        when = started + 5 if after else started - 100  # explicit: no clock-tick races
        os.utime(repo / path, (when, when))

    for f in ("src/a.py", "bench/x_sweep.py", "data/prepared/d.npz", "README.md"):
        touch(f, "v1\n", after=False)
    assert report_io.changed_during_run(repo, since=started) == []
    touch("README.md", "v2\n")  # not code
    touch("bench/results/x.md", "a result\n")  # not code
    touch("src/scratch.py", "untracked\n")  # not git's: not the code of any commit
    assert report_io.changed_during_run(repo, since=started) == []
    touch("src/a.py", "v2\n")
    touch("data/prepared/d.npz", "v2\n")
    assert report_io.changed_during_run(repo, since=started) == [
        "src/a.py",
        "data/prepared/d.npz",
    ]
    # a result with a code record: only the files it used (and the prepared data) count
    used = ["bench/x_sweep.py", report_io.PREPARED]
    assert report_io.changed_during_run(repo, since=started, only=used) == ["data/prepared/d.npz"]
    (repo / "bench" / "x_sweep.py").unlink()
    assert report_io.changed_during_run(repo, since=started, only=used) == [
        "bench/x_sweep.py (deleted)",
        "data/prepared/d.npz",
    ]
    during = f"abc1234 + {report_io.DURING} (src/a.py)"
    assert collect.freshness(during, ("x_sweep",)).startswith("stale: its code or data changed")


def test_save_result_marks_a_result_whose_code_changed_during_its_run(tmp_path, monkeypatch):
    results = tmp_path / "bench" / "results"
    results.mkdir(parents=True)
    monkeypatch.setattr(report_io, "RESULTS", results)
    monkeypatch.setattr(report_io, "changed_during_run", lambda root, **_: ["src/a.py"])
    path = report_io.save_result("probe", "body", 60.0, coarse="child processes")
    head = path.read_text().splitlines()[0]
    assert f"+ {report_io.DURING} (src/a.py)" in head
    assert collect.HEADER.search(path.read_text())["commit"].endswith("(src/a.py)")


def test_split_results_that_measure_a_pair_twice_are_flagged():
    assert collect.overlaps(["da-a-b", "da-c"], "da") == {}  # a clean split
    both = collect.overlaps(["da-a-b", "da-b-c"], "da")
    assert set(both) == {"da-a-b", "da-b-c"} and "overlaps da-b-c (b in both" in both["da-a-b"]
    whole = collect.overlaps(["da", "da-a"], "da")
    assert "every pair" in whole["da"] and "every pair" in whole["da-a"]
    assert collect.overlaps(["gan"], "gan") == {}


def test_a_result_from_another_machine_is_told_apart_but_not_by_its_thread_count():
    here = "AMD EPYC, 2 CPUs, 2 threads"
    assert collect.same_machine("AMD EPYC, 2 CPUs, 1 thread", here)
    assert not collect.same_machine("Intel Xeon, 2 CPUs, 2 threads", here)
    assert not collect.same_machine("AMD EPYC, 8 CPUs, 2 threads", here)
    assert not collect.same_machine("AMD EPYC, 2 CPUs, 2 threads, NVIDIA T4", here)
    assert collect.same_machine("not recorded", here)
