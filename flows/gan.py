"""Stage flow `gan`: DCGAN and conditional DCGAN, Fréchet distances, the augmentation claim. `python -m flows.gan [--set k=v ...]`."""

from flows.stage import stage_flow

gan_flow = stage_flow("gan")

if __name__ == "__main__":
    from adaptflow.cli import run_stage_main

    run_stage_main("gan")
