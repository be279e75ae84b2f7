"""Stage flow `features`: frozen source backbones embed the target datasets; linear heads on them. `python -m flows.features [--set k=v ...]`."""

from flows.stage import stage_flow

features_flow = stage_flow("features")

if __name__ == "__main__":
    from adaptflow.cli import run_stage_main

    run_stage_main("features")
