"""Tiny real Gemma 3 models, tokenizers and LoRA adapters, built in-process for tests.

The base is trained for a moment to answer plainly and the adapter to answer in the card's
``<think>…</think>answer`` format, so tests can tell them apart with greedy decoding.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import Gemma3ForCausalLM, Gemma3TextConfig, PreTrainedTokenizerFast

from medcot.prompt import SYSTEM_PROMPT, USER_TEMPLATE, ensure_chat_template

SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
QUESTIONS = [
    "A 65-year-old with orthopnea and edema. Initial therapy?",
    "Ankle swelling on a thiazolidinedione: likely cause?",
    "Fever and neck stiffness in a child. Next step?",
]
ADAPTER_REASONING = "Fluid overload points to heart failure. Loop diuretics relieve congestion."
ADAPTER_ANSWER = "Start a loop diuretic."
ADAPTER_OUTPUT = f"<think>\n{ADAPTER_REASONING}\n</think>\n{ADAPTER_ANSWER}"
BASE_OUTPUT = "Rest and fluids."
CORPUS = [SYSTEM_PROMPT, *QUESTIONS, ADAPTER_OUTPUT, BASE_OUTPUT, USER_TEMPLATE, "model user system"]


def build_tokenizer() -> PreTrainedTokenizerFast:
    """Byte-level BPE (any text encodes, emoji and control characters included) with Gemma's control tokens."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=420, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(CORPUS * 3, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<bos>",
        eos_token="<eos>",
        unk_token="<unk>",
        pad_token="<pad>",
        additional_special_tokens=["<start_of_turn>", "<end_of_turn>"],
    )
    ensure_chat_template(fast)
    return fast


def tiny_config(vocab_size: int, layers: int = 2, **overrides: object) -> Gemma3TextConfig:
    """Gemma 3's architecture at a size that builds, runs and saves in milliseconds."""
    shape = dict(hidden_size=64, intermediate_size=128, num_attention_heads=2, num_key_value_heads=1, head_dim=32)
    shape.update(max_position_embeddings=8192, sliding_window=512)
    return Gemma3TextConfig(vocab_size=vocab_size, num_hidden_layers=layers, **{**shape, **overrides})


def build_model(tokenizer: PreTrainedTokenizerFast, seed: int = 0, layers: int = 2) -> Gemma3ForCausalLM:
    torch.manual_seed(seed)
    config = tiny_config(
        len(tokenizer),
        layers,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=[tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<end_of_turn>")],
        pad_token_id=tokenizer.pad_token_id,
    )
    model = Gemma3ForCausalLM(config)
    # Gemma's default 0.02 init leaves the tied output projection too small for a frozen-embedding LoRA to move
    # the logits; a wider init lets the adapter learn its output in a few dozen steps.
    torch.nn.init.normal_(model.model.embed_tokens.weight, std=0.2)
    return model.eval()


def _examples(tokenizer: PreTrainedTokenizerFast, target: str) -> list[tuple[torch.Tensor, int]]:
    out = []
    for question in QUESTIONS:
        messages = [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": USER_TEMPLATE.format(question=question)},
        ]
        prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        target_ids = tokenizer(target + "<end_of_turn>", add_special_tokens=False)["input_ids"]
        out.append((torch.tensor([prompt_ids + target_ids]), len(prompt_ids)))
    return out


def train(model: torch.nn.Module, tokenizer: PreTrainedTokenizerFast, target: str, steps: int, lr: float) -> None:
    """Teach the model to emit ``target`` after the card's prompt (loss on the answer only, as in SFT)."""
    examples = _examples(tokenizer, target)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    for step in range(steps):
        ids, prompt_len = examples[step % len(examples)]
        labels = ids.clone()
        labels[:, :prompt_len] = -100
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()


@dataclass(frozen=True)
class TinyRepos:
    base: Path  # plain weights + tokenizer (with chat template)
    adapter: Path  # PEFT LoRA adapter, no tokenizer
    merged: Path  # the adapter merged into the base, with tokenizer
    bare_base: Path  # same weights, tokenizer saved without a chat template


def repos_in(root: Path) -> TinyRepos:
    """Where build_repos puts each repo under ``root``."""
    return TinyRepos(root / "base", root / "adapter", root / "merged", root / "bare-base")


def build_repos(root: Path, train_base: bool = True) -> TinyRepos:
    """The tiny repos; ``train_base=False`` leaves the base's weights random: greedy, it then writes newlines without
    end (to the token limit), a base answer long enough for a test to stop it. Tests get them through
    tests/helpers/tiny_cache.py, which builds them once per version of this file and of the libraries."""
    tokenizer = build_tokenizer()
    model = build_model(tokenizer)
    if train_base:
        train(model, tokenizer, BASE_OUTPUT, steps=60, lr=3e-3)
    repos = repos_in(root)
    model.save_pretrained(repos.base)
    tokenizer.save_pretrained(repos.base)
    model.save_pretrained(repos.bare_base)
    bare = build_tokenizer()
    bare.chat_template = None
    bare.save_pretrained(repos.bare_base)

    peft_model = get_peft_model(model, LoraConfig(r=16, lora_alpha=16, target_modules="all-linear"))
    train(peft_model, tokenizer, ADAPTER_OUTPUT, steps=80, lr=1e-2)
    peft_model.save_pretrained(repos.adapter)
    merged = peft_model.merge_and_unload()
    merged.save_pretrained(repos.merged)
    tokenizer.save_pretrained(repos.merged)
    return repos


def save_untrained_base(folder: Path) -> Path:
    """The tiny base with random weights and the tokenizer, saved in a blink (no training): a base to train on."""
    tokenizer = build_tokenizer()
    build_model(tokenizer).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def write_training_rows(path: Path, repeats: int = 4) -> Path:
    """A JSONL in the card's dataset columns that the tiny tokenizer encodes compactly: the tiny adapter's target
    answer for each of QUESTIONS, ``repeats`` times (for `python -m training` tests)."""
    import json

    rows = [
        {"Question": question, "Complex_CoT": ADAPTER_REASONING, "Response": ADAPTER_ANSWER}
        for _ in range(repeats)
        for question in QUESTIONS
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def tiny_recipe(**overrides: object) -> object:
    """A recipe for the tiny model: a few quick steps at a learning rate that moves it (training.recipe.Recipe)."""
    from training.recipe import load_recipe

    values = dict(max_steps=6, batch_size=2, learning_rate=1e-2, max_length=512, lora_r=8, warmup_steps=0)
    return load_recipe(overrides={**values, **overrides})


def tiny_trainer(base_folder: Path, rows: Path, output: Path, eval_rows: int = 0, **recipe: object) -> tuple:
    """`python -m training`'s pieces over a tiny base, on the CPU: (trainer, interrupt callback, data)."""
    from training.base_model import load_base, pick_hardware
    from training.data import load_data
    from training.formatting import tokenize_dataset
    from training.trainer import build_trainer

    chosen = tiny_recipe(**recipe)
    hardware = pick_hardware()
    base = load_base(str(base_folder), hardware)
    data = load_data(str(rows), eval_rows=eval_rows, seed=chosen.seed)
    held_out = tokenize_dataset(data.eval, base.tokenizer) if data.eval is not None else None
    trainer, _, interrupt = build_trainer(
        base, chosen, tokenize_dataset(data.train, base.tokenizer), held_out, output, hardware
    )
    return trainer, interrupt, data
