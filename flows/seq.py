"""Stage flow `seq`: the seed's Transformer vs LSTM/GRU/CNN/logistic regression on MNIST-1D, the parallel-vs-sequential timing, ViT vs CNN. `python -m flows.seq [--set k=v ...]`."""

from flows.stage import stage_flow

seq_flow = stage_flow("seq")

if __name__ == "__main__":
    from adaptflow.cli import run_stage_main

    run_stage_main("seq")
