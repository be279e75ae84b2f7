"""Stage flow `ae`: autoencoder family vs PCA. `python -m flows.ae [--set k=v ...]`."""

from flows.stage import stage_flow

ae_flow = stage_flow("ae")

if __name__ == "__main__":
    from adaptflow.cli import run_stage_main

    run_stage_main("ae")
