"""Stage flow `source`: pretrain the transfer backbones on the source task. `python -m flows.source [--set k=v ...]`."""

from flows.stage import stage_flow

source_flow = stage_flow("source")

if __name__ == "__main__":
    from adaptflow.cli import run_stage_main

    run_stage_main("source")
