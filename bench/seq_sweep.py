"""Benchmark: the `seq` stage on the `bench` profile — the sequence models trained longer at 5
seeds, the parallel-vs-sequential timing up to 1,280 steps, ViT vs CNN at 3 seeds and more
epochs — printed as the stage's report with the wall time.

    make bench-seq                                # profile bench, recomputed (cache ignored)
    python -m bench.seq_sweep --set seq.model.positional=learned

Runs are logged to MLflow (experiment `adaptflow-bench`); the Transformer registers as
`adaptflow-bench-seq`, never under a production name.
"""

from __future__ import annotations

from bench.common import bench_stage


def main(argv: list[str] | None = None) -> None:
    bench_stage(__doc__, "seq", "seq/report.md", argv)


if __name__ == "__main__":
    main()
