"""`adaptflow compare` on a store holding two pipeline runs built with the run helpers the
stages use (known values, so every number in the report can be checked)."""

from __future__ import annotations

import html
import io
import json
import re
import shutil
import subprocess
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import mlflow
import pytest
from mlflow.tracking import MlflowClient

from adaptflow import compare
from adaptflow.tracking import runs
from adaptflow.tracking.store import configure

CLAIMS = {
    "stage": "toy",
    "measured": "measured (paired)",
    "claims": [{"claim": "b beats a", "measured": "+0.20 ± 0.05", "verdict": "holds"}],
}


def figure_png() -> bytes:
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [1, 0], color="tab:red", linewidth=6)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def pipeline(exp: str, values: dict[str, list[float]], lr: str, cached_from=None) -> str:
    """A pipeline run with one stage `toy` and, unless cached, one method run per seed."""
    with runs.run(
        "pipeline-default", tags={"adaptflow.kind": "pipeline"}, experiment_id=exp
    ) as parent:
        runs.log_params({"profile": "default", "overrides": "[]"})
        tags = {"adaptflow.stage": "toy", "adaptflow.kind": "stage"}
        with runs.run("toy", tags=tags) as stage:
            runs.log_params({"toy.lr": lr, "toy.epochs": "3", "toy.seeds": "[0, 1]"})
            if cached_from:
                mlflow.set_tag(runs.TAG_FROM, cached_from)
            else:
                for method, accs in values.items():
                    for seed, acc in enumerate(accs):
                        tags = {"adaptflow.method": method, "adaptflow.seed": str(seed)}
                        with runs.run(f"toy/{method}-s{seed}", tags=tags):
                            runs.log_metrics({"toy/acc": acc, "toy/train_seconds": 1.0 + seed})
                # the same method on another pair is another column; runs that are not a
                # compared method (a registration, a sweep point) are no column at all
                for seed, acc in enumerate([0.1, 0.2]):
                    tags = {
                        "adaptflow.method": "b",
                        "adaptflow.pair": "q",
                        "adaptflow.seed": str(seed),
                    }
                    with runs.run(f"toy/q/b-s{seed}", tags=tags):
                        runs.log_metrics({"toy/acc": acc})
                for kind in ("registered", "sweep"):
                    tags = {"adaptflow.method": "b", "adaptflow.kind": kind, "adaptflow.seed": "0"}
                    with runs.run(f"toy/b-{kind}", tags=tags):
                        runs.log_metrics({"toy/acc": 99.0})
                runs.log_text(json.dumps(CLAIMS), "toy/claims.json")
                mlflow.log_image(plt.imread(io.BytesIO(figure_png())), "toy/curve.png")
        means = {m: sum(v) / len(v) for m, v in values.items()}
        runs.log_metrics({f"toy/{m}/acc_mean": x for m, x in means.items()})
        runs.log_metrics({"toy/b/acc_std": 0.1, "toy/seconds": 5.0})
        runs.log_metrics({"pipeline/stages_cached": float(cached_from is not None)})
        runs.log_metrics({"toy/b/loss": 2 * means["b"], "toy/b/loss_std": 0.4})
    return parent.info.run_id, stage.info.run_id


@pytest.fixture
def store(project):
    exp = configure(".", "adaptflow")
    first, first_stage = pipeline(exp, {"a": [0.5, 0.7], "b": [0.7, 0.9]}, lr="0.01")
    second, _ = pipeline(exp, {"a": [0.5, 0.7], "b": [0.9, 1.1]}, lr="0.02")
    return exp, first, second, first_stage


def test_report_tables_verdicts_plots_and_changes(store):
    exp, first, second, _ = store
    chosen = compare.pipeline_runs(exp, None, last=2)
    assert [r.info.run_id for r in chosen] == [first, second]
    report = compare.build(chosen)
    md = report.markdown
    # mean ± sample std over the seeds of each method: b = (0.9, 1.1)
    assert "| metric | a (n=2) | b (n=2) | b q (n=2) |" in md
    assert "| toy/acc | 0.6 ± 0.1414 | 1 ± 0.1414 | 0.15 ± 0.0707 |" in md
    assert "| b beats a | +0.20 ± 0.05 | **holds** |" in md
    assert "![toy/curve.png](img/toy_curve.png)" in md and report.images["img/toy_curve.png"]
    # changes: the stage param, the summary metric that moved (b: 0.8 -> 1.0, 2 spreads of 0.1)
    assert "| toy: toy.lr | 0.01 | 0.02 |" in md
    # SE of a difference of two 2-seed means: std·√(2/2)
    assert "| toy/b/acc_mean | 0.8 | 1 | +0.2 | 0.1 | 2 | 2.0 |" in md
    assert "| toy/b/loss | 1.6 | 2 | +0.4 | 0.4 | 2 | 1.0 |" in md  # x beside x_std
    assert "toy/a/acc_mean" not in md  # did not move
    assert "toy/seconds" not in md  # timings always move: left out


def test_a_cached_stage_reports_what_its_source_run_computed(store):
    exp, first, _, first_stage = store
    third, _ = pipeline(exp, {"a": [0.5, 0.7], "b": [0.7, 0.9]}, lr="0.01", cached_from=first_stage)
    md = compare.build(compare.pipeline_runs(exp, [first, third], 2)).markdown
    assert f"a cache hit of `{first_stage[:8]}`" in md
    assert "| toy/acc | 0.6 ± 0.1414 | 0.8 ± 0.1414 | 0.15 ± 0.0707 |" in md
    assert "_No param changed._" in md
    assert "pipeline/stages_cached" not in md  # bookkeeping: 0 -> 1 here, not a result


def test_the_html_page_is_self_contained(store, tmp_path):
    exp, *_ = store
    report = compare.build(compare.pipeline_runs(exp, None, 2))
    md, page = compare.write(report, tmp_path / "out")
    text = page.read_text()
    assert "img/" not in text and "data:image/png;base64," in text
    assert text.count("<table>") == 5  # pipeline runs, methods, verdicts, params, metrics
    assert (tmp_path / "out" / "img" / "toy_curve.png").read_bytes() == report.images[
        "img/toy_curve.png"
    ]
    assert md.read_text() == report.markdown
    (tmp_path / "out" / "img" / "old_plot.png").write_bytes(b"stale")
    compare.write(report, tmp_path / "out")  # a re-write drops images no longer linked
    assert sorted(p.name for p in (tmp_path / "out" / "img").iterdir()) == ["toy_curve.png"]


def said(proc: subprocess.CompletedProcess) -> str:
    return " ".join(proc.stderr.split())  # rich wraps long lines at the console width


def adaptflow(*args: str, cwd) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "adaptflow.cli", "compare", *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300)


def test_cli_writes_logs_and_names_what_is_missing(store, project):
    exp, first, second, _ = store
    proc = adaptflow("--last", "2", cwd=project)
    assert proc.returncode == 0, proc.stderr
    assert (project / "reports/compare/compare.html").is_file()
    logged = [a.path for a in MlflowClient().list_artifacts(second, "compare")]
    assert logged == ["compare/compare.html", "compare/compare.md"]
    empty = adaptflow("--experiment", "adaptflow-smoke", cwd=project)
    assert empty.returncode == 1 and "no experiment 'adaptflow-smoke'" in said(empty)
    with pytest.raises(compare.CompareError, match="no run '0123456789abcdef'"):
        compare.pipeline_runs(exp, [first, "0123456789abcdef"], 2)
    (child, *_) = [
        r.info.run_id
        for r in MlflowClient().search_runs([exp], "tags.`adaptflow.stage` = 'toy'")
        if r.data.tags.get("adaptflow.kind") == "method"
    ]
    with pytest.raises(compare.CompareError, match="is not a pipeline run"):
        compare.pipeline_runs(exp, [child], 2)


@pytest.mark.slow
def test_the_page_renders_in_headless_chromium(store, tmp_path):
    """Tables and images really render: chromium loads the page, a script appended to a copy
    counts tables and decoded images, and the screenshot holds the plot's red line."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    exp, *_ = store
    _, page = compare.write(compare.build(compare.pipeline_runs(exp, None, 2)), tmp_path / "out")
    probe = tmp_path / "probe.html"
    probe.write_text(
        page.read_text().replace(
            "</body>",
            "<script>window.addEventListener('load', () => { document.body.dataset.probe ="
            " JSON.stringify({tables: document.querySelectorAll('table').length,"
            " rows: document.querySelectorAll('tr').length,"
            " images: [...document.images].filter(i => i.complete && i.naturalWidth > 0)"
            ".length}); });</script></body>",
        )
    )
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]
    dom = subprocess.run(
        [browser, *flags, "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    m = re.search(r'data-probe="([^"]*)"', dom.stdout)
    assert m, dom.stderr[-2000:]
    probe_data = json.loads(html.unescape(m.group(1)))
    assert probe_data["tables"] == 5 and probe_data["images"] == 1
    assert probe_data["rows"] >= 12  # every header and body row of the five tables
    shot = tmp_path / "shot.png"
    subprocess.run(
        [browser, *flags, "--window-size=1280,2400", f"--screenshot={shot}", page.as_uri()],
        capture_output=True, timeout=120, check=True,
    )  # fmt: skip
    pixels = plt.imread(shot)[..., :3]
    red = (pixels[..., 0] > 0.7) & (pixels[..., 1] < 0.45) & (pixels[..., 2] < 0.35)
    assert red.sum() > 200  # the plot's thick red line is on screen
    dark = pixels.mean(axis=2) < 0.3
    assert dark.sum() > 2000  # text and table borders
