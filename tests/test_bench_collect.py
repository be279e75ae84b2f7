"""bench/collect.py: the README's Results section from bench/results/, with each result's commit
and whether it is current, stale or missing."""

from __future__ import annotations

import subprocess

import pytest
from bench import collect, common


@pytest.fixture
def results(tmp_path, monkeypatch):
    folder = tmp_path / "results"
    monkeypatch.setattr(common, "RESULTS", folder)
    monkeypatch.setattr(collect, "RESULTS", folder)
    return folder


def test_results_are_collected_with_their_commit_state_and_references(results, tmp_path):
    common.save_result("trainer", "**table**\n\n| a | b |\n|---|---|\n| 1 | 2 |", 61.0)
    common.save_result("gan", "# GAN report\n\n![curve](curve.png)", 30.0)
    common.save_result("da-syn2mnist-jda_m2u", "# DA\n\nsyn2mnist numbers", 10.0)
    stale = results / "seq.md"
    stale.write_text("<!-- bench: seq; commit: 0000000; date: 2026-01-01 00:00 UTC -->\nold\n")
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{collect.BEGIN}\nold text\n{collect.END}\nrest\n")
    collect.main(["--readme", str(readme)])
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith(f"{collect.END}\nrest\n")
    assert "old text" not in text
    row = next(line for line in text.splitlines() if line.startswith("| Trainer efficiency |"))
    state = collect.freshness(common.commit(), ("trainer_overhead",))
    assert row.endswith(f"| {common.commit()} | {common.machine()} | {state} |"), row
    assert " thread" in common.machine() and ";" not in common.machine()
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


def test_a_result_is_current_only_while_the_code_behind_it_is_unchanged(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    (repo / "src").mkdir(parents=True)
    (repo / "bench").mkdir()

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
            cwd=repo,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()

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
    """common.commit() (what a result records) and collect (what judges it) read one CODE list:
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
    monkeypatch.setattr(common, "RESULTS", repo / "bench" / "results")
    assert not common.commit().endswith("uncommitted changes")
    (repo / "README.md").write_text("v2\n")  # not code
    (repo / "bench" / "results" / "x.md").write_text("v2\n")  # a result, not code
    assert not common.commit().endswith("uncommitted changes")
    for path in ("pyproject.toml", "constraints.txt"):
        (repo / path).write_text("v2\n")
        assert common.commit().endswith(" + uncommitted changes"), path
        (repo / path).write_text("v1\n")
