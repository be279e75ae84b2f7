"""Stage flow `finetune`: feature extraction vs fine-tuning vs scratch over label budgets. `python -m flows.finetune [--set k=v ...]`."""

from flows.stage import stage_flow

finetune_flow = stage_flow("finetune")

if __name__ == "__main__":
    from adaptflow.cli import run_stage_main

    run_stage_main("finetune")
