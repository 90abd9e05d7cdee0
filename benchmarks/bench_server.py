"""Server mode against the local path, side by side in one run: the real embedded Gemma 3 270M (the converted folder)
served by vLLM behind the app, and the same folder loaded by the app itself; 1 and N concurrent users through the
app (/chat over gradio_client): per-user tok/s, aggregate tok/s and time to first token.

    python -m benchmarks.bench_server [--users 1 8] [--new-tokens 96] [--out docs/bench]

Needs the vLLM venv (tests/vllm_server.py; `bash .ci/run` makes it). The medical adapter is on the Hub, which this
machine cannot reach, so both sides serve the base alone; the LoRA path is what tests/test_vllm.py checks.
Writes docs/bench/server.json and docs/bench/server.png.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks.app_process import AppProcess, app_env, free_port
from benchmarks.client import serve_once, serve_when_ready, timed_client
from benchmarks.machine import machine_info
from medcot.model.embedded import embedded_model_dir
from tests.helpers.vllm_server import VllmServer, vllm_missing

QUESTIONS = [
    "A 65-year-old with exertional dyspnea and orthopnea presents with bilateral pitting edema and raised JVP. "
    "What initial pharmacologic therapy is indicated?",
    "Elderly patient with new ankle swelling on thiazolidinedione—likely cause?",
    "A 24-year-old has fever, neck stiffness and a petechial rash. What is the most urgent next step?",
    "Which electrolyte abnormality is most typical of refeeding syndrome?",
]
SERVED_NAME = "gemma-3-270m"
# vLLM compiles the model (torch.compile) on its first start, which took over 7 minutes on a busy 2-core machine;
# later starts read the compiled cache (~/.cache/vllm).
VLLM_START_S = 1500.0


def one_request(client: Any, index: int, new_tokens: int, start: threading.Barrier) -> dict[str, Any]:
    start.wait(120)
    sample = serve_once(client, QUESTIONS[index % len(QUESTIONS)], new_tokens)
    first = sample["first_text_at"]
    tokens = sample.get("tokens") or 0
    decode_s = sample["finished_at"] - first if first is not None else None
    return {
        "ttft_s": first - sample["sent"] if first is not None else None,
        "tokens": tokens,
        "seconds": sample["finished_at"] - sample["sent"],
        "tok_s": (tokens - 1) / decode_s if decode_s and tokens > 1 else None,  # after the first text, as the app
        "sent": sample["sent"],
        "finished": sample["finished_at"],
    }


def run_users(url: str, users: int, rounds: int, new_tokens: int) -> dict[str, Any]:
    """``rounds`` rounds of ``users`` requests sent at the same moment; per-user and aggregate figures."""
    clients = [timed_client(url) for _ in range(users)]
    samples: list[dict[str, Any]] = []
    walls: list[float] = []
    try:
        for _ in range(rounds):
            start = threading.Barrier(users)
            with ThreadPoolExecutor(users) as pool:
                batch = list(pool.map(one_request, clients, range(users), [new_tokens] * users, [start] * users))
            samples += batch
            walls.append(max(s["finished"] for s in batch) - min(s["sent"] for s in batch))
    finally:
        for client in clients:
            client.close()
    tokens = sum(s["tokens"] for s in samples)
    ttfts = [s["ttft_s"] for s in samples if s["ttft_s"] is not None]
    rates = [s["tok_s"] for s in samples if s["tok_s"] is not None]
    return {
        "users": users,
        "requests": len(samples),
        "tokens_per_request_mean": round(tokens / len(samples), 1),
        "per_user_tok_s_median": round(statistics.median(rates), 2) if rates else None,
        "aggregate_tok_s": round(tokens / sum(walls), 2),
        "ttft_s_median": round(statistics.median(ttfts), 3) if ttfts else None,
        "ttft_s_max": round(max(ttfts), 3) if ttfts else None,
    }


def measure_app(env: dict[str, str], users: Sequence[int], rounds: int, new_tokens: int) -> dict[str, Any]:
    app = AppProcess(env).start()
    try:
        app.wait_until_listening()
        warm = timed_client(app.url)
        try:
            serve_when_ready(warm, QUESTIONS[0], new_tokens, app)  # loads, compiles, fills caches: not counted
        finally:
            warm.close()
        return {f"users_{n}": run_users(app.url, n, rounds, new_tokens) for n in users} | {"app_memory": app.memory()}
    finally:
        app.stop()


def draw(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    users = result["settings"]["users"]
    panels = [
        ("per_user_tok_s_median", "per-user decode tok/s (median)"),
        ("aggregate_tok_s", "aggregate tok/s"),
        ("ttft_s_median", "time to first token, s (median)"),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.5))
    machine = result["machine"]
    fig.suptitle(
        f"Gemma 3 270M through the app: local path vs vLLM server, {machine['cpu']} ({machine['cores_available']} "
        f"cores, shared), {machine['date'][:10]}",
        fontsize=11,
    )
    width = 0.38
    for axis, (key, title) in zip(axes, panels, strict=True):
        for offset, (mode, colour) in enumerate((("local", "#607d8b"), ("server", "#00897b"))):
            values = [result[mode][f"users_{n}"][key] or 0 for n in users]
            bars = axis.bar([i + (offset - 0.5) * width for i in range(len(users))], values, width, color=colour)
            axis.bar_label(bars, fmt="%.2f", fontsize=8)
            bars.set_label("local (transformers in the app)" if mode == "local" else "server (vLLM behind the app)")
        axis.set_xticks(range(len(users)), [f"{n} user{'s' if n > 1 else ''}" for n in users])
        axis.set_title(title, fontsize=10)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--vllm-dtype", default="bfloat16")
    parser.add_argument("--out", type=Path, default=Path("docs/bench"))
    args = parser.parse_args(argv)
    if reason := vllm_missing():
        print(f"bench_server: {reason}", file=sys.stderr)
        return 2
    folder = embedded_model_dir(None, lambda message, fraction: print(f"… {message}", file=sys.stderr))
    result: dict[str, Any] = {
        "machine": machine_info(),
        "settings": {
            "model": str(folder),
            "users": args.users,
            "rounds": args.rounds,
            "new_tokens": args.new_tokens,
            "greedy": True,
            "vllm_dtype": args.vllm_dtype,
        },
    }
    local_env = app_env(str(folder), "auto")
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        log = Path(scratch) / "vllm.log"
        server = VllmServer(folder, free_port(), log, served_name=SERVED_NAME, dtype=args.vllm_dtype)
        # Started first and idle while the local path is measured, so that both run beside the same processes.
        started = time.perf_counter()
        server.start(timeout=VLLM_START_S)
        try:
            result["settings"]["vllm_start_s"] = round(time.perf_counter() - started, 1)
            for mode, env in (
                ("local", local_env),
                ("server", local_env | {"MEDCOT_SERVER_URL": server.url, "MEDCOT_SERVER_MODEL": SERVED_NAME}),
            ):
                print(f"{mode}…", file=sys.stderr)
                result[mode] = measure_app(env, args.users, args.rounds, args.new_tokens)
                (args.out / "server.json").write_text(json.dumps(result, indent=2) + "\n")  # what is done so far
        finally:
            server.stop()
    result["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    (args.out / "server.json").write_text(json.dumps(result, indent=2) + "\n")
    draw(result, args.out / "server.png")
    print(json.dumps({mode: result[mode] for mode in ("local", "server")}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
