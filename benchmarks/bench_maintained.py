"""The hand-written pieces against what transformers and peft provide, on the embedded Gemma 3 270M.

    python -m benchmarks.bench_maintained --out artifacts/bench_maintained.json [--switches 20] [--only stop|switch]

- Stop texts: transformers' StopStringCriteria (generate's ``stop_strings``) against medcot.generation's
  StopTextCriteria: the cost of building each for a request, and of one call per generated token.
- The base model from a merged adapter: peft's ``unmerge_adapter()``/``merge_adapter()`` per switch against
  medcot.model.lora_delta (factors kept, hooks attached while base answers run): the time a switch takes, and how
  far the weights drift from the loaded ones after many switches (a random LoRA r=16 on all 7 projections).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer, StopStringCriteria

from medcot.generation import StopTextCriteria
from medcot.model.lora_delta import LoraDelta
from medcot.prompt import STOP_TEXTS, encode_prompt

PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def timed(function: Callable[[], Any], rounds: int) -> list[float]:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return times


def stop_texts(model_dir: Path, rounds: int) -> dict[str, Any]:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    prompt = encode_prompt(tokenizer, "Fever and flank pain. Diagnosis?").input_ids
    ids = torch.tensor([prompt + tokenizer.encode(" The answer is pyelonephritis" * 20, add_special_tokens=False)])
    scores = torch.zeros(1, 1)
    first = timed(lambda: StopStringCriteria(tokenizer, list(STOP_TEXTS)), 1)[0]
    again = timed(lambda: StopStringCriteria(tokenizer, list(STOP_TEXTS)), rounds)  # its cache holds the embedding
    theirs, ours = (
        StopStringCriteria(tokenizer, list(STOP_TEXTS)),
        StopTextCriteria(tokenizer, len(prompt), STOP_TEXTS),
    )
    built_ours = timed(lambda: StopTextCriteria(tokenizer, len(prompt), STOP_TEXTS), rounds)
    calls = {"theirs": [], "ours": []}
    for _ in range(rounds):  # interleaved
        calls["theirs"] += timed(lambda: theirs(ids, scores), 20)
        calls["ours"] += timed(lambda: ours(ids, scores), 20)
    return {
        "vocabulary": len(tokenizer),
        "stop_strings_build_first_s": round(first, 3),
        "stop_strings_build_cached_ms": round(1000 * statistics.median(again), 2),
        "ours_build_ms": round(1000 * statistics.median(built_ours), 4),
        "stop_strings_per_token_us": round(1e6 * statistics.median(calls["theirs"]), 1),
        "ours_per_token_us": round(1e6 * statistics.median(calls["ours"]), 1),
    }


def switching(model_dir: Path, switches: int, dtype: torch.dtype) -> dict[str, Any]:
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).eval()
    config = LoraConfig(r=16, lora_alpha=32, target_modules=PROJECTIONS, init_lora_weights=False)
    model = get_peft_model(base, config).eval()
    for name, parameter in model.named_parameters():
        if "lora_" in name:  # a trained adapter's scale, so that its update is not negligible
            parameter.data.normal_(0, 0.02)
    weights = {name: p for name, p in model.named_parameters() if "base_layer.weight" in name}
    original = {name: p.detach().clone() for name, p in weights.items()}
    delta = LoraDelta.from_peft(model)
    assert delta is not None
    model.merge_adapter()
    merged = {name: p.detach().clone() for name, p in weights.items()}
    peft_s = []
    for _ in range(switches):  # a base answer, then back to the fine-tune: one unmerge and one merge
        peft_s += timed(model.unmerge_adapter, 1)
        peft_s += timed(model.merge_adapter, 1)
    drift_merged = max((p - merged[n]).abs().max().item() for n, p in weights.items())
    model.unmerge_adapter()
    drift_base = max((p - original[n]).abs().max().item() for n, p in weights.items())
    plain = model.merge_and_unload()
    delta_s = []
    for _ in range(switches):
        delta_s += timed(lambda: delta.attach(plain), 1)
        delta_s += timed(delta.detach, 1)
    return {
        "dtype": str(dtype).removeprefix("torch."),
        "switches": switches,
        "peft_switch_ms": round(1000 * statistics.median(peft_s), 2),
        "lora_delta_switch_ms": round(1000 * statistics.median(delta_s), 3),
        "peft_drift_of_merged_weights": drift_merged,
        "peft_drift_of_base_weights": drift_base,
        "lora_delta_drift": 0.0,  # the merged weights are never written again
        "lora_delta_factors_mb": round(delta.nbytes / 1e6, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a converted Gemma 3 270M folder (default: the embedded one)")
    parser.add_argument("--switches", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--only", choices=["stop", "switch"], help="one of the two measurements")
    parser.add_argument("--out", type=Path, default=Path("artifacts/bench_maintained.json"))
    args = parser.parse_args()
    if args.model is None:
        from medcot.config import Settings
        from medcot.model.embedded import embedded_model_dir

        args.model = embedded_model_dir(Settings().cache_dir)
    results: dict[str, Any] = {}
    if args.only != "switch":
        results["stop_texts"] = stop_texts(args.model, args.rounds)
        print(json.dumps(results["stop_texts"]), flush=True)
    if args.only != "stop":
        results["switch"] = []
        for dtype in (torch.bfloat16, torch.float32):
            results["switch"].append(switching(args.model, args.switches, dtype))
            print(json.dumps(results["switch"][-1]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
