"""The model side: loading (Hub, local folders, the embedded GGUF base), CPU modes, the merged adapter's LoRA
delta and the switch that turns the adapter off for base-model requests."""
