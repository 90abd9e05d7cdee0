"""`python -m training`: the model card's recipe (TRL SFT + LoRA, completion-only loss, the card's prompt from
medcot.prompt) producing an adapter the app, the CLI, benchmarks.eval and vLLM serve. Never shipped to the Space."""
