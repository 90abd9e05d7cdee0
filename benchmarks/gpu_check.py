"""The check for a CUDA machine (what a ZeroGPU GPU worker does, on a real GPU): `bash scripts/gpu-check.sh`.

    python -m benchmarks.gpu_check [--out docs/bench/gpu.json] [--new-tokens 128] [--rounds 3] [--skip-embedded]
    python -m benchmarks.gpu_check --dry-run   # on the CPU, the tiny model only: that every part runs

1. The tiny test model (tests/tiny.py) and the real embedded Gemma 3 270M base load on CUDA in bf16, and answers
   stream through the app (the Gradio UI in this process, over gradio_client's /chat).
2. Raw decode speed and time to first token of the 270M, greedy, interleaved rounds: transformers' generate()
   (dynamic cache: what MEDCOT_DECODE=auto runs on a GPU off ZeroGPU), the static step eagerly
   (medcot.static_generation), and the static step compiled ahead of time as ZeroGPU's startup compiles it
   (medcot.model.exported_step's export, AOTInductor for this GPU: the compilation and the package's load timed
   apart, its greedy tokens checked equal to the eager step's). generate()'s own compile for a static cache is left
   out: it recompiles every step for Gemma 3 (issue 22).
3. The ZeroGPU duration each mode's speed would make the app ask (medcot/gpu_budget.py's formula, fed these
   figures instead of a live Space's answers): a fresh worker's start-up (CUDA initialised in a new process, then
   the weights copied to the GPU, as spaces' worker does; the compiled mode adds its package's load), the time to
   first token and the seconds a token, for ASK_TOKENS new tokens; beside it what the prior asks.

Figures go to JSON (--out) and a table on stdout. Nothing in the test suite depends on this; it needs a CUDA torch
but for --dry-run, which runs every part on the CPU with the tiny model (speeds there mean nothing).
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
from collections.abc import Callable, Sequence
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
MODES = ("generate", "static_eager", "static_aot")


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


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed_generate(generate: Callable[..., torch.Tensor], ids: torch.Tensor, new_tokens: int) -> dict[str, Any]:
    """One greedy generation of exactly ``new_tokens`` (no EOS), timed per token as it streams."""
    times = TokenTimes()
    synchronize(ids.device)
    started = time.perf_counter()
    with torch.inference_mode():
        out = generate(
            input_ids=ids,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,  # generate() stops at EOS otherwise; the static loop ignores it
            do_sample=False,
            eos_token_id=None,
            streamer=times,
        )
    synchronize(ids.device)
    ended = time.perf_counter()
    decoded = len(times.times) - 1
    decode_s = times.times[-1] - times.times[0] if decoded > 0 else 0.0
    return {
        "ttft_ms": (times.times[0] - started) * 1000 if times.times else None,
        "decode_tok_s": decoded / decode_s if decode_s > 0 else None,
        "tokens": len(times.times),
        "seconds": ended - started,
        "ids": out[0, ids.shape[1] :].tolist(),
    }


def generators(model: Any, folder: Path) -> tuple[dict[str, Callable[..., torch.Tensor]], dict[str, Any]]:
    """Each mode's generate(); the ahead-of-time compilation (as ZeroGPU's startup compiles it) timed on the way."""
    from medcot.model.exported_step import AotStep, export_step
    from medcot.model.static_decode import StaticDecoder
    from medcot.static_generation import StaticGenerator

    eager = StaticGenerator(StaticDecoder(model))
    compiled = StaticGenerator(eager.decoder)
    started = time.perf_counter()
    package = torch._inductor.aoti_compile_and_package(
        export_step(eager.decoder), package_path=str(folder / "step.pt2")
    )
    compile_s = time.perf_counter() - started
    started = time.perf_counter()
    program = torch._inductor.aoti_load_package(package)
    load_s = time.perf_counter() - started
    compiled.step = AotStep(eager.decoder, {False: program}, "compiled ahead of time")
    modes = {"generate": model.generate, "static_eager": eager.generate, "static_aot": compiled.generate}
    return modes, {"compile_s": round(compile_s, 2), "package_load_s": round(load_s, 3)}


def measure_modes(loaded: Any, new_tokens: int, rounds: int) -> dict[str, Any]:
    """Each mode: one warm-up call, then `rounds` timed, interleaved; the compiled mode's build timed apart."""
    from medcot.prompt import encode_prompt

    prompt = encode_prompt(loaded.tokenizer, QUESTION)
    ids = torch.tensor([prompt.input_ids], device=loaded.model.device)
    with tempfile.TemporaryDirectory() as folder:
        modes, build = generators(loaded.model, Path(folder))
        results: dict[str, Any] = {}
        for mode, generate in modes.items():
            started = time.perf_counter()
            timed_generate(generate, ids, new_tokens)
            results[mode] = {"warmup_s": round(time.perf_counter() - started, 2), "rounds": []}
        results["static_aot"].update(build)
        for _ in range(rounds):
            for mode, generate in modes.items():
                results[mode]["rounds"].append(timed_generate(generate, ids, new_tokens))
    for figures in results.values():
        for key in ("ttft_ms", "decode_tok_s"):
            values = [r[key] for r in figures["rounds"] if r[key] is not None]
            figures[key] = round(statistics.median(values), 2) if values else None
    eager_ids = [r.pop("ids") for r in results["static_eager"]["rounds"]]
    for mode in ("generate", "static_aot"):
        same = [r.pop("ids") == expected for r, expected in zip(results[mode]["rounds"], eager_ids, strict=True)]
        results[mode]["tokens_equal_static_eager"] = all(same)
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
    weights copied from host memory to the GPU (spaces' move, from pinned memory: copied from pinned here too).
    Nothing on the CPU (a dry run)."""
    if model.device.type != "cuda":
        return {"cuda_init_s": 0.0, "weights_move_s": 0.0}
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

    asks: dict[str, Any] = {"prior": {str(n): GpuBudget().seconds_for(n) for n in ASK_TOKENS}}
    for mode, figures in generation.items():
        startup_s = startup["cuda_init_s"] + startup["weights_move_s"] + figures.get("package_load_s", 0.0)
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
    lines = [f"{'model':<14} {'mode':<14} {'TTFT ms':>9} {'decode tok/s':>13} {'compile (warm-up) s':>20}"]
    for model in report["models"]:
        app = model.get("app", {})
        lines.append(f"{model['name']:<14} app: loaded={model['loaded']} streamed={app.get('streamed')}")
        for mode, figures in model.get("generation", {}).items():
            first = f"{figures.get('compile_s', '-')} ({figures['warmup_s']})"
            lines.append(f"{'':<14} {mode:<14} {figures['ttft_ms']!s:>9} {figures['decode_tok_s']!s:>13} {first:>20}")
        if "zerogpu_ask_s" in model:
            tokens = " / ".join(map(str, ASK_TOKENS))
            lines.append(f"{'':<14} ZeroGPU ask (s) for {tokens} tokens, worker start-up {model['worker_startup']}:")
            for mode, asks in model["zerogpu_ask_s"].items():
                lines.append(f"{'':<14} {mode:<14} {' / '.join(str(asks[str(n)]) for n in ASK_TOKENS)}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="docs/bench/gpu.json (a dry run: gpu-check-dry-run.json in /tmp)")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-embedded", action="store_true", help="only the tiny model (no 270M conversion)")
    parser.add_argument("--dry-run", action="store_true", help="every part on the CPU, the tiny model, 8 tokens")
    options = parser.parse_args(argv)
    if options.dry_run:
        options.skip_embedded, options.new_tokens, options.rounds = True, 8, 1
        options.out = options.out or Path(tempfile.gettempdir()) / "gpu-check-dry-run.json"
    elif not torch.cuda.is_available():
        print("gpu-check: no CUDA device (or a CPU build of torch): nothing to check here.", file=sys.stderr)
        return 2
    options.out = options.out or ROOT / "docs" / "bench" / "gpu.json"
    from medcot.config import Settings
    from tests.helpers.tiny import build_repos

    device, dtype = ("cpu", "float32") if options.dry_run else ("cuda", "bfloat16")
    cuda = Settings(device=device, dtype=dtype, max_new_tokens=options.new_tokens)
    report: dict[str, Any] = {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "gpu": torch.cuda.get_device_name(0) if device == "cuda" else "none (a dry run on the CPU)",
        "torch": torch.__version__,
        "new_tokens": options.new_tokens,
        "rounds": options.rounds,
        "models": [],
    }
    with tempfile.TemporaryDirectory() as folder:
        repos = build_repos(Path(folder))
        tiny = replace(cuda, base_model=str(repos.base), adapter=str(repos.adapter))
        speed = options.dry_run  # the speed of the tiny model on a GPU says nothing; on a dry run, that it runs
        report["models"].append(check_model("tiny", tiny, options.new_tokens, options.rounds, speed))
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
