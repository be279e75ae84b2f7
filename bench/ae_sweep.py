"""Benchmark: the `ae` stage on the `bench` profile — the default sizes plus the validation λ
sweep of the sparse AE (val MSE vs mean activation: how `options.sparse.lam` and
`sparse_mse_factor` were fixed), the λ = 0 context runs and every method's anomaly copy —
printed as the stage's comparison report with the wall time.

    make bench-ae                                 # profile bench, recomputed (cache ignored)
    python -m bench.ae_sweep --set ae.sparse_lambdas=[0.3,1,3,10,30]

Runs are logged to MLflow (experiment `adaptflow-bench`); the model registers as
`adaptflow-bench-ae`, never under a production name.
"""

from __future__ import annotations

from bench.common import bench_stage


def main(argv: list[str] | None = None) -> None:
    bench_stage(__doc__, "ae", "ae/comparison.md", argv)


if __name__ == "__main__":
    main()
