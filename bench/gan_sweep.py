"""Benchmark: the `gan` stage on the `bench` profile — DCGAN and cGAN at 3 seeds and more
epochs, the augmentation claim at 5 seeds — printed as the stage's report (Fréchet distances
with floor and ceilings, the evaluator's confidence and coverage, the verdicts) with the wall
time.

    make bench-gan                                # profile bench, recomputed (cache ignored)
    python -m bench.gan_sweep --set gan.epochs=30 --set gan.d_steps=2

Runs are logged to MLflow (experiment `adaptflow-bench`); the generator registers as
`adaptflow-bench-gan`, never under a production name.
"""

from __future__ import annotations

from bench.common import bench_stage


def main(argv: list[str] | None = None) -> None:
    bench_stage(__doc__, "gan", "gan/report.md", argv)


if __name__ == "__main__":
    main()
