"""The check for a CUDA machine (what a ZeroGPU GPU worker does, on a real GPU): `bash scripts/gpu-check.sh`.

    python -m benchmarks.gpu_check [--out docs/bench/gpu.json] [--new-tokens 128] [--rounds 3] [--skip-embedded]

1. The tiny test model (tests/tiny.py) and the real embedded Gemma 3 270M base load on CUDA in bf16, and answers
   stream through the app (the Gradio UI in this process, over gradio_client's /chat).
2. Raw decode speed and time to first token of the 270M for three ways to generate: eager (dynamic cache), a static
   cache, and the static cache compiled (transformers compiles the forward pass for a static cache on CUDA; the first
   call pays the compilation, timed apart as `compile_s`). On ZeroGPU a compilation has to happen ahead of time
   (spaces.aoti_compile in the startup), never per request: these figures say whether that is worth doing.
3. The ZeroGPU duration each mode's speed would make the app ask (medcot/gpu_budget.py's formula, fed these
   figures instead of a live Space's answers): a fresh worker's start-up (CUDA initialised in a new process, then
   the weights copied to the GPU, as spaces' worker does), the time to first token and the seconds a token, for
   ASK_TOKENS new tokens; beside it what the prior (before any answer is measured) asks.

Figures go to JSON (--out) and a table on stdout. Nothing in the test suite depends on this; it needs a CUDA torch.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from transformers.generation.streamers import BaseStreamer

ROOT = Path(__file__).resolve().parents[1]
QUESTION = "A 65-year-old with orthopnea and edema. Initial therapy?"
ASK_TOKENS = (512, 4096)  # the default answer length and the most the UI allows
CUDA_INIT = (  # timed in a new process, as a freshly forked worker meets CUDA (its import is done before the fork)
    "import time, torch; t = time.perf_counter(); torch.zeros(1, device='cuda'); print(time.perf_counter() - t)"
)
MODES: dict[str, dict[str, Any]] = {
    "eager": {"cache_implementation": "dynamic", "disable_compile": True},
    "static_cache": {"cache_implementation": "static", "disable_compile": True},
    "compiled": {"cache_implementation": "static"},  # auto-compiled by generate() on CUDA
}


class TokenTimes(BaseStreamer):
    """When each generated token came out of generate() (the first put() is the prompt)."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass


def timed_generate(model: Any, ids: torch.Tensor, new_tokens: int, mode: str, pad_id: int) -> dict[str, Any]:
    times = TokenTimes()
    torch.cuda.synchronize()
    started = time.perf_counter()
    model.generate(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,  # the same number of tokens in every mode
        do_sample=False,
        pad_token_id=pad_id,
        streamer=times,
        **MODES[mode],
    )
    torch.cuda.synchronize()
    ended = time.perf_counter()
    decoded = len(times.times) - 1
    decode_s = times.times[-1] - times.times[0] if decoded > 0 else 0.0
    return {
        "ttft_ms": (times.times[0] - started) * 1000 if times.times else None,
        "decode_tok_s": decoded / decode_s if decode_s > 0 else None,
        "tokens": len(times.times),
        "seconds": ended - started,
    }


def measure_modes(loaded: Any, new_tokens: int, rounds: int) -> dict[str, Any]:
    """Each mode: one warm-up call (the compiled mode's includes compiling), then `rounds` timed, interleaved."""
    from medcot.prompt import encode_prompt

    prompt = encode_prompt(loaded.tokenizer, QUESTION)
    ids = torch.tensor([prompt.input_ids], device=loaded.model.device)
    pad = loaded.tokenizer.pad_token_id or 0
    results: dict[str, Any] = {}
    for mode in MODES:
        started = time.perf_counter()
        timed_generate(loaded.model, ids, new_tokens, mode, pad)
        results[mode] = {"compile_s" if mode == "compiled" else "warmup_s": round(time.perf_counter() - started, 2)}
        results[mode]["rounds"] = []
    for _ in range(rounds):
        for mode in MODES:
            results[mode]["rounds"].append(timed_generate(loaded.model, ids, new_tokens, mode, pad))
    for figures in results.values():
        for key in ("ttft_ms", "decode_tok_s"):
            values = [r[key] for r in figures["rounds"] if r[key] is not None]
            figures[key] = round(statistics.median(values), 2) if values else None
    return results


def stream_through_app(engine: Any) -> dict[str, Any]:
    """One /chat answer over gradio_client from the app built as app.py builds it; how it streamed."""
    from gradio_client import Client

    from tests.helpers.serving import serve

    with serve(engine) as url:
        updates = list(Client(url, verbose=False).submit(QUESTION, 128, 0.0, 0.95, 64, 1.0, api_name="/chat"))
    final = updates[-1] if updates else []
    texts = [str(m.get("content")) for m in final if isinstance(m, dict)]
    return {
        "updates": len(updates),
        "streamed": len(updates) > 2,
        "answered": any(text.strip() for text in texts),
        "stats_line": next((t for t in texts if t.startswith("<sub>")), None),
    }


def worker_startup(model: Any) -> dict[str, float]:
    """What a fresh ZeroGPU worker does before its first generation: CUDA's first touch in a new process, and the
    weights copied from host memory to the GPU (spaces' move, from pinned memory: copied from pinned here too)."""
    probe = subprocess.run([sys.executable, "-c", CUDA_INIT], capture_output=True, text=True, check=True)
    cuda_init_s = float(probe.stdout.split()[-1])
    host = [tensor.detach().to("cpu").pin_memory() for tensor in model.state_dict().values()]
    torch.cuda.synchronize()
    started = time.perf_counter()
    moved = [tensor.to("cuda", non_blocking=True) for tensor in host]
    torch.cuda.synchronize()
    move_s = time.perf_counter() - started
    del host, moved
    return {"cuda_init_s": round(cuda_init_s, 3), "weights_move_s": round(move_s, 3)}


def zerogpu_asks(generation: dict[str, Any], startup: dict[str, float], rounds: int) -> dict[str, Any]:
    """The seconds the app would ask ZeroGPU for ASK_TOKENS tokens at each mode's measured speed, and the prior's."""
    from medcot.gpu_budget import Figures, GpuBudget

    startup_s = startup["cuda_init_s"] + startup["weights_move_s"]
    asks: dict[str, Any] = {"prior": {str(n): GpuBudget().seconds_for(n) for n in ASK_TOKENS}}
    for mode, figures in generation.items():
        if figures["decode_tok_s"] and figures["ttft_ms"] is not None:
            measured = Figures(startup_s, figures["ttft_ms"] / 1000, 1 / figures["decode_tok_s"], rounds, True)
            asks[mode] = {str(n): measured.seconds_for(n) for n in ASK_TOKENS}
    return asks


def check_model(name: str, settings: Any, new_tokens: int, rounds: int, speed: bool) -> dict[str, Any]:
    from medcot.engine import Engine

    started = time.perf_counter()
    engine = Engine(settings).load()
    if not engine.ready:
        return {"name": name, "loaded": False, "error": engine.error}
    loaded = engine.loaded
    result: dict[str, Any] = {
        "name": name,
        "loaded": True,
        "load_s": round(time.perf_counter() - started, 2),
        "device": str(loaded.model.device),
        "dtype": loaded.dtype,
        "app": stream_through_app(engine),
    }
    if speed:
        result["generation"] = measure_modes(loaded, new_tokens, rounds)
        result["worker_startup"] = worker_startup(loaded.model)
        result["zerogpu_ask_s"] = zerogpu_asks(result["generation"], result["worker_startup"], rounds)
    return result


def format_table(report: dict[str, Any]) -> str:
    lines = [f"{'model':<14} {'mode':<14} {'TTFT ms':>9} {'decode tok/s':>13} {'warm-up/compile s':>18}"]
    for model in report["models"]:
        app = model.get("app", {})
        lines.append(f"{model['name']:<14} app: loaded={model['loaded']} streamed={app.get('streamed')}")
        for mode, figures in model.get("generation", {}).items():
            first = figures.get("compile_s", figures.get("warmup_s"))
            lines.append(
                f"{'':<14} {mode:<14} {figures['ttft_ms']!s:>9} {figures['decode_tok_s']!s:>13} {first!s:>18}"
            )
        if "zerogpu_ask_s" in model:
            tokens = " / ".join(map(str, ASK_TOKENS))
            lines.append(f"{'':<14} ZeroGPU ask (s) for {tokens} tokens, worker start-up {model['worker_startup']}:")
            for mode, asks in model["zerogpu_ask_s"].items():
                lines.append(f"{'':<14} {mode:<14} {' / '.join(str(asks[str(n)]) for n in ASK_TOKENS)}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "bench" / "gpu.json")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-embedded", action="store_true", help="only the tiny model (no 270M conversion)")
    options = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu-check: no CUDA device (or a CPU build of torch): nothing to check here.", file=sys.stderr)
        return 2
    from medcot.config import Settings
    from tests.helpers.tiny import build_repos

    cuda = Settings(device="cuda", dtype="bfloat16", max_new_tokens=options.new_tokens)
    report: dict[str, Any] = {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "gpu": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "new_tokens": options.new_tokens,
        "rounds": options.rounds,
        "models": [],
    }
    with tempfile.TemporaryDirectory() as folder:
        repos = build_repos(Path(folder))
        tiny = replace(cuda, base_model=str(repos.base), adapter=str(repos.adapter))
        report["models"].append(check_model("tiny", tiny, options.new_tokens, options.rounds, speed=False))
    if not options.skip_embedded:
        embedded = replace(cuda, base_model="embedded", adapter=None)
        report["models"].append(check_model("embedded-270m", embedded, options.new_tokens, options.rounds, True))
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_text(json.dumps(report, indent=2) + "\n")
    print(format_table(report))
    print(f"written: {options.out}")
    ok = all(m["loaded"] and m["app"]["streamed"] and m["app"]["answered"] for m in report["models"])
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
