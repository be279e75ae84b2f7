"""bench/pipeline_overhead.py's arithmetic: how a child's wall is split into parts, the goal's
verdict over pairs, and the table built from them (the bench itself takes ~1 h: `make
bench-pipeline`)."""

from __future__ import annotations

import re

import pytest
from bench import pipeline_overhead as bench


def _child(imports, in_process, exit_, **timed):
    return {
        "imports": imports,
        "in_process": in_process,
        "exit": exit_,
        "children_cpu": 3.0,
        "others_cpu": 1.0,
        "steal": 0.0,
        "rss": {"self": 1.0, "tree": 1.2},
        "eager": ["numpy", "torch"],
        **timed,
    }


def test_a_childs_wall_splits_into_parts_that_add_up():
    child = _child(2.0, 90.0, 4.0, **{"prefect start": 6.0, "tracking": 10.0, "plots": 3.0})
    parts = bench._parts(child, wall=100.0)
    assert parts["imports"] == pytest.approx(2.0 + (100.0 - 90.0 - 4.0))  # start-up, not exit
    assert parts["exit"] == 4.0
    assert parts["model logging"] == 0.0
    assert parts["rest"] == pytest.approx(100.0 - 8.0 - 4.0 - 6.0 - 10.0 - 3.0)
    assert sum(parts.values()) == pytest.approx(100.0)


@pytest.mark.parametrize(
    ("ratios", "starts"),
    [
        ([1.03, 1.04, 1.035], "met"),  # the interval at or below 1.10
        ([1.15, 1.16, 1.155], "NOT met"),  # above it
        ([1.03, 1.04], "undetermined"),  # two pairs: t(0.975, 1) = 12.7 leaves it wide
        ([1.028, 1.116, 1.07], "undetermined"),  # across it
        ([1.05], "met in the one pair run"),
        ([1.2], "NOT met in the one pair run"),
    ],
)
def test_the_ratio_goal_is_decided_over_the_pairs(ratios, starts):
    assert bench.ratio_verdict(ratios).startswith(starts)


def test_the_cache_goal_is_decided_over_the_pairs_too():
    # a mean under 0.05 is not enough: one pair above it leaves the goal undetermined
    assert bench.ratio_verdict([0.026, 0.038, 0.056], bench.CACHE_GOAL).startswith("undetermined")
    assert bench.ratio_verdict([0.036, 0.038, 0.037], bench.CACHE_GOAL).startswith("met")


def test_the_table_shows_each_pair_and_the_means():
    pairs = []
    for cold_wall, loop_wall in ((110.0, 100.0), (130.0, 104.0)):
        loop = _child(5.0, loop_wall - 5.0, 0.5, tracking=4.0, plots=1.0)
        bare = bench._bare(loop, 2.0)
        pairs.append(
            {
                "cold_wall": cold_wall,
                "cold": _child(5.0, cold_wall - 8.0, 3.0, tracking=6.0, **{"prefect start": 6.0}),
                "warm_wall": 5.0,
                "warm": _child(3.0, 4.0, 0.5),
                "loop_wall": loop_wall,
                "loop": loop,
                "bare_imports": 2.0,
                "bare": bare,
                "ratio": cold_wall / bare,
            }
        )
    table = bench.overhead_table({"profile": "default", "pairs": pairs})
    bares = [p["bare"] for p in pairs]
    assert bares == [pytest.approx(95.0 - 5.0 - 4.0 - 1.0 + 2.0), pytest.approx(91.0)]
    assert f"{110 / bares[0]:.3f}, {130 / bares[1]:.3f}" in table
    assert "undetermined" in table  # 1.27 and 1.43 but two pairs: t(0.975, 1) = 12.7
    rest = {}  # each column's parts add up to its mean wall; the rest row is the pairs' mean
    for line in table.splitlines():
        if line.startswith("| the rest"):
            rest = [float(c) for c in line.split("|")[2:5]]
    # imports 5 + (wall − in_process − exit) = 9.5, exit 0.5, tracking 4, plots 1
    loop_rests = [w - 9.5 - 0.5 - 4.0 - 1.0 for w in (100.0, 104.0)]
    assert rest[1] == pytest.approx(sum(loop_rests) / 2, abs=0.05)
    # per pair (5 / 110, 5 / 130), decided over the pairs as the ratio is (two: wide)
    assert (
        "warm ÷ cold = **0.045, 0.038** (goal ≤ 0.05: undetermined; geometric mean 0.042" in table
    )
    assert "| **wall** | **120.0** | **102.0** | **5.0** |" in table
    assert "interpreter exit" in table and "| 3.0 |" in table.split("interpreter exit")[1]


def test_the_slope_interval_is_the_textbook_one():
    from scipy import stats

    xs, ys = [1, 4, 16, 32, 64], [15.0, 16.1, 17.9, 21.5, 27.0]
    slope, low, high = bench.slope_ci(xs, ys)
    fit = stats.linregress(xs, ys)  # an independent implementation of the same OLS interval
    half = stats.t.ppf(0.975, len(xs) - 2) * fit.stderr
    assert slope == pytest.approx(fit.slope)
    assert (low, high) == (pytest.approx(fit.slope - half), pytest.approx(fit.slope + half))
    with pytest.raises(ValueError, match="at least 3 points"):
        bench.slope_ci([1, 4], [1.0, 2.0])


@pytest.mark.parametrize(
    ("low", "high", "word"),
    [
        (0.1, 0.4, "met"),
        (1.2, 1.5, "NOT met"),
        (-2.9, 3.2, "undetermined"),
        (0.5, 1.0, "undetermined"),
    ],
)
def test_the_per_run_goal_can_come_out_any_way(low, high, word):
    assert bench.below_verdict(low, high, bench.PER_RUN_GOAL) == word


def _scaling(over_per_run: float, noise: list[float], over_per_x: float = 0.0) -> dict:
    """Scaling rows whose pipeline − bare grows `over_per_run` s per run, plus `noise`, and
    `over_per_x` s per × of data (plus a little noise)."""
    rows = [
        {
            "axis": "data",
            "k": k,
            "pipeline": 30.0 + (5 + over_per_x) * k + d,
            "loop": 20 + 5 * k,
            "bare": 12.0 + 5 * k,
        }
        for k, d in zip(bench.SCALE_DATA, (0.5, -0.8, 0.3), strict=True)
    ]
    for k, e in zip(bench.SCALE_RUNS, noise, strict=True):
        bare = 6.0 + 0.1 * k
        rows.append(
            {
                "axis": "runs",
                "k": k,
                "pipeline": bare + 15.0 + over_per_run * k + e,
                "loop": bare + 8.0,
                "bare": bare,
            }
        )
    return {"rows": rows}


def test_the_scaling_table_decides_the_per_run_overhead():
    quiet = [0.3, -0.2, 0.1, -0.3, 0.2]
    table, per_run = bench.scaling_table(_scaling(0.2, quiet))
    assert per_run == pytest.approx(0.2, abs=0.02)
    assert "(goal < 1 s: **met**" in table
    table, per_run = bench.scaling_table(_scaling(1.5, quiet))
    assert "(goal < 1 s: **NOT met**" in table
    noisy = [9.0, -8.0, 10.0, -9.0, 8.0]  # the old three points' spread, scaled up: cannot say
    assert "(goal < 1 s: **undetermined**" in bench.scaling_table(_scaling(0.5, noisy))[0]
    # data axis: pipeline − bare is 18 s ± 0.8: its slope's interval (1 degree of freedom)
    # spans 0; an overhead that grows 6 s per × shows
    assert "neither growth nor decline shown" in table.split("- data:")[1].split("- runs")[0]
    grows = bench.scaling_table(_scaling(0.2, quiet, over_per_x=6.0))[0]
    assert ": grows; bare grows" in grows.split("- data:")[1]


def test_memory_is_decided_on_the_bound_not_the_samples():
    assert bench.rss_verdict(2.7) == "met"
    assert bench.rss_verdict(4.2) == "NOT met"
    pairs = [
        {
            "cold_wall": 100.0,
            "warm_wall": 3.0,
            "loop_wall": 95.0,
            "bare_imports": 2.0,
            "bare": 90.0,
            "ratio": 100 / 90,
            "cold": _child(5.0, 90.0, 3.0),
            "warm": _child(3.0, 2.0, 0.5),
            "loop": _child(5.0, 90.0, 0.5),
        }
    ]
    pairs[0]["cold"]["rss"] = {"self": 2.5, "tree": 2.9, "bound": 4.1}  # a peak between samples
    table = bench.overhead_table({"profile": "default", "pairs": pairs})
    assert "at most 4.10 GiB" in table and "goal < 4 GiB: **NOT met**" in table


@pytest.mark.parametrize(
    ("cold", "warm", "message"),
    [
        ({"stages": 8, "cached": 0}, {"stages": 8, "cached": 7}, "warm re-run took 7 of 8"),
        ({"stages": 8, "cached": 2}, {"stages": 8, "cached": 8}, "cold run (--force) took 2"),
        ({"stages": 0, "cached": 0}, {"stages": 0, "cached": 0}, "cold run"),
    ],
)
def test_a_warm_run_that_is_not_all_cache_hits_stops_the_bench(cold, warm, message):
    with pytest.raises(SystemExit, match=re.escape(message)):
        bench.check_cache(cold, warm, "[default, pair 1/3]")
    bench.check_cache({"stages": 8, "cached": 0}, {"stages": 8, "cached": 8}, "ok")  # passes
