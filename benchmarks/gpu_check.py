"""The check for a CUDA machine (what a ZeroGPU GPU worker does, on a real GPU): `bash scripts/gpu-check.sh`.

    python -m benchmarks.gpu_check [--out docs/bench/gpu.json] [--new-tokens 128] [--rounds 3] [--skip-embedded]

1. The tiny test model (tests/tiny.py) and the real embedded Gemma 3 270M base load on CUDA in bf16, and answers
   stream through the app (the Gradio UI in this process, over gradio_client's /chat).
2. Raw decode speed and time to first token of the 270M for three ways to generate: eager (dynamic cache), a static
   cache, and the static cache compiled (transformers compiles the forward pass for a static cache on CUDA; the first
   call pays the compilation, timed apart as `compile_s`). On ZeroGPU a compilation has to happen ahead of time
   (spaces.aoti_compile in the startup), never per request: these figures say whether that is worth doing.

Figures go to JSON (--out) and a table on stdout. Nothing in the test suite depends on this; it needs a CUDA torch.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
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
