"""The decode step compiled two ways on the CPU, on the embedded 270M: torch.compile (medcot.model.compiled_step) and
torch.export + AOTInductor (medcot.model.exported_step, aoti_compile_and_package / aoti_load_package).

    python -m benchmarks.aoti_step [--rounds 4] [--tokens 24] [--threads 1] [--out docs/bench/aoti_step.json]

Reports each path's cold compile (fresh caches in a temp folder), its warm start in a new process (torch.compile from
its on-disk cache; the AOTInductor package loaded), the resident memory the loaded package adds, and per token the
process's CPU time and wall time in interleaved rounds (eager, torch.compile, AOTInductor), with the greedy tokens
of the three checked equal. Compiles use one compile thread: the machine's 2 cores are shared.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")

import torch

from benchmarks.bench_cpu import BENCH_QUESTION
from benchmarks.machine import machine_info
from benchmarks.static_step import greedy_steps, interleaved
from medcot.config import EMBEDDED_MODEL, Settings
from medcot.load_state import in_passing_thread
from medcot.model.compiled_step import CompiledStep
from medcot.model.exported_step import AotStep, export_step
from medcot.model.loading import load_model
from medcot.model.static_decode import StaticDecoder
from medcot.prompt import encode_prompt

WARM_COMPILE = """
import sys, time
from pathlib import Path
from medcot.config import EMBEDDED_MODEL, Settings
from medcot.load_state import in_passing_thread
from medcot.model.compiled_step import CompiledStep
from medcot.model.loading import load_model
from medcot.model.static_decode import StaticDecoder
loaded = in_passing_thread(load_model, Settings(base_model=EMBEDDED_MODEL, adapter=None, device="cpu"))
step = CompiledStep(StaticDecoder(loaded.model), Path(sys.argv[1]))
started = time.perf_counter()
assert in_passing_thread(step.build)
print(time.perf_counter() - started)
"""
WARM_PACKAGE = """
import sys, time
import torch
started = time.perf_counter()
torch._inductor.aoti_load_package(sys.argv[1])
print(time.perf_counter() - started)
"""


def rss_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def fresh_process_seconds(script: str, argument: str, env: dict[str, str]) -> float:
    out = subprocess.run([sys.executable, "-c", script, argument], env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def measure(rounds: int, tokens: int, threads: int, work: Path) -> dict[str, Any]:
    torch.set_num_threads(threads)
    loaded = in_passing_thread(load_model, Settings(base_model=EMBEDDED_MODEL, adapter=None, device="cpu"))
    ids = torch.tensor(encode_prompt(loaded.tokenizer, BENCH_QUESTION).input_ids)
    decoder = StaticDecoder(loaded.model)
    env = {**os.environ, "PYTHONPATH": str(Path.cwd())}

    started = time.perf_counter()
    compiled = CompiledStep(decoder, work / "torch_compile")
    assert in_passing_thread(compiled.build), compiled.status
    compile_cold = time.perf_counter() - started
    compile_warm = fresh_process_seconds(WARM_COMPILE, str(work / "torch_compile"), env)
    print(f"torch.compile: cold {compile_cold:.0f} s, warm start {compile_warm:.1f} s", flush=True)

    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(work / "aoti_cache")  # cold: nothing compiled before
    started = time.perf_counter()
    program = export_step(decoder)
    export_s = time.perf_counter() - started
    package = torch._inductor.aoti_compile_and_package(program, package_path=str(work / "step.pt2"))
    aoti_cold = time.perf_counter() - started
    aoti_warm = fresh_process_seconds(WARM_PACKAGE, package, env)
    rss_before = rss_bytes()
    aoti = AotStep(decoder, {False: torch._inductor.aoti_load_package(package)}, "loaded")
    rss_added = rss_bytes() - rss_before
    print(f"AOTInductor: export {export_s:.0f} s, cold {aoti_cold:.0f} s, load {aoti_warm:.1f} s", flush=True)

    tokens_made: dict[str, list[int]] = {}

    def steps(step: Callable[..., torch.Tensor], name: str) -> None:
        tokens_made[name] = greedy_steps(decoder, step, ids, tokens)

    paths = {
        name: (lambda step=step, name=name: in_passing_thread(steps, step, name))
        for name, step in (("static_eager", decoder.step), ("torch_compile", compiled), ("aoti", aoti))
    }
    figures = interleaved(paths, rounds, tokens)
    return {
        "benchmark": "benchmarks.aoti_step",
        "machine": {**machine_info(), "threads": threads},
        "settings": {"model": loaded.base_id, "cpu_mode": loaded.dtype, "prompt_tokens": len(ids), "tokens": tokens},
        "torch_compile": {"cold_s": round(compile_cold, 1), "warm_start_s": round(compile_warm, 1)},
        "aoti": {
            "export_s": round(export_s, 1),
            "cold_s": round(aoti_cold, 1),
            "package_load_s": round(aoti_warm, 2),
            "package_mb": round(Path(package).stat().st_size / 2**20, 1),
            "rss_added_by_load_mb": round(rss_added / 2**20),
        },
        "paths": figures,
        "tokens_equal_eager": {name: made == tokens_made["static_eager"] for name, made in tokens_made.items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=24)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("docs/bench/aoti_step.json"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="medcot-aoti-") as work:
        result = measure(args.rounds, args.tokens, args.threads, Path(work))
    result["command"] = " ".join(["python -m benchmarks.aoti_step", *(sys.argv[1:] if argv is None else argv)])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({k: result[k] for k in ("torch_compile", "aoti", "paths", "tokens_equal_eager")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
