"""`adaptflow compare`: one report of pipeline runs, built from the MLflow store.

For the newest chosen pipeline run: a section per stage with its method table (mean ± std over
seeds of every metric its runs log, grouped by the compare tags: method, arch, backbone, pair,
label fraction), its verdict table (`<stage>/claims.json`) and its plots; then what changed
since the previous chosen pipeline run: params that differ, and the summary metrics that moved,
beside their seed spread. Written as Markdown (images next to it) and as one self-contained HTML
page (images inline), and logged on the newest pipeline run under `compare/`.

Reads the store only through `mlflow.search_runs` / the client; a cached stage (a cache hit)
points to the run that computed it (`adaptflow.cached_from`), whose children and plots are used.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.tracking import MlflowClient

from adaptflow.files import atomic_write_bytes, atomic_write_text
from adaptflow.tracking.runs import DESCRIBED, NOTE, TAG_FROM

GROUP_TAGS = [k for k in DESCRIBED if k != "adaptflow.seed"]  # what a table row is
MAX_PLOTS = 8  # per stage: the report stays readable (the rest is in the MLflow UI)


class CompareError(RuntimeError):
    """Nothing to compare (no pipeline runs, unknown run ids): says what to run first."""


@dataclass
class StageView:
    name: str
    run: object  # the stage run of this pipeline run
    source: object  # where its children and plots live (itself, or the run it was cached from)
    children: pd.DataFrame = field(default_factory=pd.DataFrame)
    claims: dict | None = None
    plots: list[tuple[str, bytes]] = field(default_factory=list)


def pipeline_runs(experiment_id: str, run_ids: list[str] | None, last: int) -> list:
    """The chosen pipeline runs, oldest first: `run_ids`, or the `last` newest finished ones."""
    client = MlflowClient()
    if run_ids:
        found = []
        for rid in run_ids:
            try:
                run = client.get_run(rid)
            except mlflow.exceptions.MlflowException:
                raise CompareError(f"no run {rid!r} in the store") from None
            if run.data.tags.get("adaptflow.kind") != "pipeline":
                raise CompareError(
                    f"run {rid} ({run.info.run_name}) is not a pipeline run; give the ids of "
                    "pipeline-<profile> runs (`adaptflow compare --last 2` picks them)"
                )
            found.append(run)
        return sorted(found, key=lambda r: r.info.start_time)
    found = client.search_runs(
        [experiment_id],
        "tags.`adaptflow.kind` = 'pipeline' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=last,
    )
    if not found:
        raise CompareError(
            "no finished pipeline run in this experiment: run `make pipeline` first "
            "(or pick the experiment with --experiment / --set profile=...)"
        )
    return list(reversed(found))


def _children(experiment_id: str, parent_id: str) -> list:
    return mlflow.search_runs(
        [experiment_id], f"tags.`mlflow.parentRunId` = '{parent_id}'", output_format="list"
    )


def _artifact(client: MlflowClient, run_id: str, path: str) -> bytes | None:
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = client.download_artifacts(run_id, path, tmp)
        except Exception:  # absent (an older run, a stage without one): reported as such
            return None
        return Path(local).read_bytes()


def _plots(client: MlflowClient, run_id: str, prefix: str) -> list[tuple[str, bytes]]:
    out, stack = [], [prefix]
    while stack and len(out) < MAX_PLOTS:
        for item in client.list_artifacts(run_id, stack.pop()):
            if item.is_dir:
                stack.append(item.path)
            elif item.path.endswith(".png") and len(out) < MAX_PLOTS:
                data = _artifact(client, run_id, item.path)
                if data:
                    out.append((item.path, data))
    for item in client.list_artifacts(run_id):  # plots a stage logs at its top level
        if item.path.endswith(".png") and len(out) < MAX_PLOTS:
            data = _artifact(client, run_id, item.path)
            if data:
                out.append((item.path, data))
    return sorted(out)


def stage_views(pipeline_run, artifacts: bool = True) -> dict[str, StageView]:
    """The stages of a pipeline run; without `artifacts` only runs, params and metrics."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    client = MlflowClient()
    exp = pipeline_run.info.experiment_id
    views = {}
    for run in sorted(_children(exp, pipeline_run.info.run_id), key=lambda r: r.info.start_time):
        name = run.data.tags.get("adaptflow.stage")
        if not name:
            continue
        src_id = run.data.tags.get(TAG_FROM)
        source = client.get_run(src_id) if src_id else run
        kids = [r for r in _children(exp, source.info.run_id) if _is_method_run(r.data.tags)]
        raw = _artifact(client, source.info.run_id, f"{name}/claims.json") if artifacts else None
        views[name] = StageView(
            name,
            run,
            source,
            _frame(kids),
            json.loads(raw) if raw else None,
            _plots(client, source.info.run_id, name) if artifacts else [],
        )
    return views


def _is_method_run(tags: dict[str, str]) -> bool:
    """A run of one method/seed (not a registration or pretraining-phase run); runs logged
    before the `adaptflow.kind` tag existed are told apart by their other tags."""
    if "adaptflow.kind" in tags:
        return tags["adaptflow.kind"] == "method"
    return not any(k.startswith(("adaptflow.registered_", "adaptflow.phase")) for k in tags)


def _frame(runs: list) -> pd.DataFrame:
    rows = []
    for r in runs:
        tags = dict(r.data.tags)
        if "adaptflow.arm" in tags:  # runs logged before arms were also tagged as methods
            tags.setdefault("adaptflow.method", tags["adaptflow.arm"])
        row = {k: tags.get(k, "") for k in DESCRIBED}
        row |= {f"m:{k}": v for k, v in r.data.metrics.items()}
        rows.append(row)
    return pd.DataFrame(rows)


def _fmt(x: float) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    a = abs(x)
    if a != 0 and (a >= 1e5 or a < 1e-3):
        return f"{x:.3g}"
    return f"{x:.4f}".rstrip("0").rstrip(".") if a < 10 else f"{x:.2f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    def clean(c) -> str:
        return str(c).replace("|", "\\|").replace("\n", " ")

    return [
        "| " + " | ".join(map(clean, header)) + " |",
        "|" + "---|" * len(header),
        *["| " + " | ".join(map(clean, r)) + " |" for r in rows],
    ]


def method_table(children: pd.DataFrame) -> list[str]:
    """Rows: metric; columns: a group of runs (same method/arch/backbone/pair/fraction);
    cells: mean ± std over its seeds (n)."""
    if children.empty:
        return ["_No method runs (the stage logs its results on the stage run only)._"]
    keys = [k for k in GROUP_TAGS if children[k].astype(bool).any()]
    metrics = sorted(c for c in children.columns if c.startswith("m:"))
    groups = list(children.groupby(keys, sort=True)) if keys else [((), children)]
    header = ["metric"]
    for key, g in groups:
        key = key if isinstance(key, tuple) else (key,)
        label = " ".join(str(v) for v in key if v) or "all"
        header.append(f"{label} (n={len(g)})")
    rows = []
    for m in metrics:
        cells = [m[2:]]
        for _, g in groups:
            v = g[m].dropna()
            if v.empty:
                cells.append("–")
            elif len(v) == 1:
                cells.append(_fmt(v.iloc[0]))
            else:
                cells.append(f"{_fmt(v.mean())} ± {_fmt(v.std(ddof=1))}")
        rows.append(cells)
    return _table(header, rows)


def claims_lines(view: StageView) -> list[str]:
    if view.claims is None:
        return ["_No verdict table (`claims.json`) on this stage's run._"]
    rows = [[c["claim"], c["measured"], f"**{c['verdict']}**"] for c in view.claims["claims"]]
    return _table(["claim", view.claims.get("measured", "measured"), "verdict"], rows)


def params_diff(old: dict[str, str], new: dict[str, str]) -> list[list[str]]:
    keys = sorted(set(old) | set(new))
    return [
        [k, old.get(k, "(absent)"), new.get(k, "(absent)")]
        for k in keys
        if old.get(k) != new.get(k)
    ]


TIMING_WORDS = ("seconds", "time", "_s_")
BOOKKEEPING = ("pipeline/",)  # e.g. pipeline/stages_cached: how the run ran, not a result


def seeds_per_stage(views: dict[str, StageView]) -> dict[str, int]:
    """{stage: number of seeds} from each stage run's logged `<section>.seeds` param."""
    out = {}
    for name, view in views.items():
        for key, value in view.source.data.params.items():
            if key.endswith(".seeds"):
                try:
                    out[name] = len(json.loads(value))
                except (ValueError, TypeError):
                    continue
    return out


def metric_deltas(
    old: dict[str, float], new: dict[str, float], seeds: dict[str, int] | None = None
) -> list[list[str]]:
    """Summary metrics that moved. Where the stage logs the spread over seeds beside the value
    (`<name>_std` beside `<name>_mean` or `<name>`) and its seed count n is known, the move is
    set against the standard error of a difference of two n-seed means, std·√(2/n) (the new
    run's spread standing in for both). Timings, spreads and bookkeeping are left out."""
    seeds = seeds or {}
    rows = []
    for k in sorted(set(old) & set(new)):
        if (
            any(w in k for w in TIMING_WORDS)
            or k.endswith(("_std", "_se"))
            or k.startswith(BOOKKEEPING)
        ):
            continue
        a, b = old[k], new[k]
        if a == b or (math.isnan(a) and math.isnan(b)):
            continue
        base = k[: -len("_mean")] if k.endswith("_mean") else k  # x_mean or x, beside x_std
        std = new.get(f"{base}_std")
        n = seeds.get(k.split("/")[0])
        se = std * math.sqrt(2 / n) if std is not None and n else None
        rows.append(
            [
                k,
                _fmt(a),
                _fmt(b),
                f"{b - a:+.4g}",
                "–" if std is None else _fmt(std),
                "–" if not n else str(n),
                "" if not se else f"{abs(b - a) / se:.1f}",
            ]
        )
    return rows


def _when(run) -> str:
    import datetime as dt

    t = dt.datetime.fromtimestamp(run.info.start_time / 1000, dt.UTC)
    return t.strftime("%Y-%m-%d %H:%M UTC")


def _duration(run) -> str:
    if not run.info.end_time:
        return "–"
    return f"{(run.info.end_time - run.info.start_time) / 1000:.0f} s"


@dataclass
class Report:
    markdown: str
    images: dict[str, bytes]  # relative path in the markdown -> PNG bytes

    def html(self) -> str:
        """One self-contained page: the Markdown rendered, every image inline (data: URIs)."""
        import markdown

        text = self.markdown
        for path, data in self.images.items():
            uri = "data:image/png;base64," + base64.b64encode(data).decode()
            text = text.replace(f"]({path})", f"]({uri})")
        body = markdown.markdown(text, extensions=["tables"])
        return HTML_PAGE.format(title=html.escape(self.markdown.splitlines()[0][2:]), body=body)


HTML_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 80rem; padding: 0 1rem;
       color: #222; }}
table {{ border-collapse: collapse; margin: 1rem 0; font-size: 0.85rem; }}
th, td {{ border: 1px solid #ccc; padding: 0.25rem 0.5rem; text-align: left; vertical-align: top; }}
th {{ background: #f3f3f3; }}
img {{ max-width: 48%; margin: 0.25rem; border: 1px solid #ddd; }}
code {{ background: #f6f6f6; padding: 0 0.2rem; }}
</style></head>
<body>
{body}
</body></html>
"""


def build(runs: list) -> Report:
    """The report of `runs` (oldest first): the newest in full, changes against the one before."""
    current = runs[-1]
    previous = runs[-2] if len(runs) > 1 else None
    views = stage_views(current)
    lines = [
        f"# adaptflow compare: {current.info.run_name} ({current.info.run_id[:8]})",
        "",
        "Built from the MLflow store by `adaptflow compare`. Stage tables: every metric of the "
        "stage's runs, mean ± std over seeds (n = runs in the group); verdicts as the stage "
        "decided them.",
        "",
        "## Pipeline runs",
        "",
        *_table(
            ["run", "started", "duration", "status", "profile", "commit", "overrides"],
            [
                [
                    f"{r.info.run_name} `{r.info.run_id[:8]}`"
                    + (" ← this report" if r is current else ""),
                    _when(r),
                    _duration(r),
                    r.info.status,
                    r.data.tags.get("adaptflow.profile", "?"),
                    r.data.tags.get("adaptflow.git_commit", "?")[:10],
                    " ".join(json.loads(r.data.params.get("overrides", "[]"))) or "–",
                ]
                for r in runs
            ],
        ),
        "",
    ]
    images: dict[str, bytes] = {}
    for name, view in views.items():
        cached = view.source is not view.run
        lines += [
            f"## Stage `{name}`",
            "",
            f"Run `{view.run.info.run_id[:8]}`"
            + (f", a cache hit of `{view.source.info.run_id[:8]}`" if cached else "")
            + f"; {len(view.children)} method runs; "
            + view.run.data.tags.get(NOTE, ""),
            "",
            "### Methods",
            "",
            *method_table(view.children),
            "",
            "### Verdicts",
            "",
            *claims_lines(view),
            "",
        ]
        if view.plots:
            lines += ["### Plots", ""]
            for path, data in view.plots:
                rel = f"img/{path.replace('/', '_')}"
                images[rel] = data
                lines.append(f"![{path}]({rel})")
            lines.append("")
    lines += ["## Changes since the previous pipeline run", ""]
    if previous is None:
        lines += ["_Only one pipeline run was chosen: nothing to compare against._", ""]
    else:
        lines += changes(previous, current, views)
    return Report("\n".join(lines) + "\n", images)


def changes(previous, current, views: dict[str, StageView]) -> list[str]:
    out = [
        f"From `{previous.info.run_id[:8]}` ({_when(previous)}, commit "
        f"{previous.data.tags.get('adaptflow.git_commit', '?')[:10]}) to `{current.info.run_id[:8]}`.",
        "",
        "### Params",
        "",
    ]
    old_views = stage_views(previous, artifacts=False)
    old_p = dict(previous.data.params)
    new_p = dict(current.data.params)
    for name in sorted(set(views) | set(old_views)):
        if name in views and name in old_views:
            old_p |= {f"{name}: {k}": v for k, v in old_views[name].source.data.params.items()}
            new_p |= {f"{name}: {k}": v for k, v in views[name].source.data.params.items()}
    diff = params_diff(old_p, new_p)
    out += _table(["param", "before", "now"], diff) if diff else ["_No param changed._"]
    out += [
        "",
        "### Metrics",
        "",
        "Summary metrics (the pipeline run's) that moved. `seed std` is the new run's spread "
        "over its n seeds where the stage logs one; `|Δ| / SE` sets the move against the "
        "standard error of a difference of two n-seed means, std·√(2/n): below about 2 it is "
        "within seed noise. Timings, spreads and bookkeeping are left out.",
        "",
    ]
    rows = metric_deltas(previous.data.metrics, current.data.metrics, seeds_per_stage(views))
    out += (
        _table(["metric", "before", "now", "Δ", "seed std", "n", "|Δ| / SE"], rows)
        if rows
        else ["_No summary metric moved._"]
    )
    return out + [""]


def write(report: Report, out_dir: Path) -> tuple[Path, Path]:
    """compare.md (+ img/) and compare.html in `out_dir`, each written whole or not at all."""
    page_text = report.html().encode()  # built before anything is written
    out_dir.mkdir(parents=True, exist_ok=True)
    img = out_dir / "img"
    for stale in img.glob("*.png") if img.is_dir() else []:
        if f"img/{stale.name}" not in report.images:
            stale.unlink()  # from an older report: not linked any more
    for rel, data in report.images.items():
        atomic_write_bytes(out_dir / rel, data)
    md, page = out_dir / "compare.md", out_dir / "compare.html"
    atomic_write_text(md, report.markdown)
    atomic_write_bytes(page, page_text)
    return md, page


def log_on(run, report: Report) -> None:
    """The report on the pipeline run it describes (`compare/compare.html`, `.md`)."""
    client = MlflowClient()
    client.log_text(run.info.run_id, report.html(), "compare/compare.html")
    client.log_text(run.info.run_id, report.markdown, "compare/compare.md")
