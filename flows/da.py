"""Stage flow `da`: domain adaptation, every method x pair x seed, selected without target labels. `python -m flows.da [--set k=v ...]`."""

from flows.stage import stage_flow

da_flow = stage_flow("da")

if __name__ == "__main__":
    from adaptflow.cli import run_stage_main

    run_stage_main("da")
