"""Stage flow `pretrain`: greedy layer-wise pretraining vs random init. `python -m flows.pretrain [--set k=v ...]`."""

from flows.stage import stage_flow

pretrain_flow = stage_flow("pretrain")

if __name__ == "__main__":
    from adaptflow.cli import run_stage_main

    run_stage_main("pretrain")
