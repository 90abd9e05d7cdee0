"""Helpers the tests share (not tests themselves): tiny models, the served app, chromium, vLLM, ZeroGPU."""
