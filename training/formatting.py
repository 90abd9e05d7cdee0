"""A training row as token ids: the card's prompt exactly as the app sends it, then the answer the card trains.

The prompt's ids come from medcot.prompt.encode_prompt, the function the engine prompts the model with, so training
and serving cannot drift apart. TRL gets them already tokenized, with a ``completion_mask`` (its prompt/completion
format after tokenization), and masks the prompt from the loss. Its own text path would tokenize the question
whole, so a question holding "<end_of_turn>" would train on a control token the app never sends (the app splits
user text with split_special_tokens), and it appends ``<eos>`` where the chat turn ends with ``<end_of_turn>``.
"""

from __future__ import annotations

from typing import Any

from transformers import PreTrainedTokenizerBase

from medcot.prompt import encode_prompt, encode_text

END_OF_TURN = "<end_of_turn>"


def assistant_text(reasoning: str, response: str) -> str:
    """The model's turn as the card trains it: ``<think>`` reasoning, then the answer (trimmed, as the template is)."""
    return f"<think>\n{reasoning.strip()}\n</think>\n{response.strip()}"


def prompt_ids(tokenizer: PreTrainedTokenizerBase, question: str) -> list[int]:
    """The card's prompt for ``question``, byte for byte and token for token what the engine sends."""
    return encode_prompt(tokenizer, question.strip()).input_ids


def completion_ids(tokenizer: PreTrainedTokenizerBase, reasoning: str, response: str) -> list[int]:
    """The answer's ids, its text never turned into control tokens, closed by the real ``<end_of_turn>`` (trained:
    it is where the app's generation stops)."""
    end = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    if end is None or end == tokenizer.unk_token_id:
        raise ValueError(f"the tokenizer has no {END_OF_TURN} token: it is not a Gemma 3 chat tokenizer")
    return [*encode_text(tokenizer, assistant_text(reasoning, response)), end]


def tokenize_row(tokenizer: PreTrainedTokenizerBase, row: dict[str, Any]) -> dict[str, list[int]]:
    """``input_ids`` and TRL's ``completion_mask`` (0 over the prompt, 1 over the answer) for one dataset row."""
    prompt = prompt_ids(tokenizer, row["Question"])
    completion = completion_ids(tokenizer, row["Complex_CoT"], row["Response"])
    return {"input_ids": prompt + completion, "completion_mask": [0] * len(prompt) + [1] * len(completion)}


def tokenize_dataset(dataset: Any, tokenizer: PreTrainedTokenizerBase, label: str = "train") -> Any:
    """Every row of a `datasets.Dataset` tokenized, with a progress bar; only the two columns TRL reads are kept.

    A plain loop rather than ``Dataset.map``: map fingerprints its function by pickling, and the prompt module's
    tokenizer lock cannot be pickled (it warned and hashed at random on every run).
    """
    from datasets import Dataset
    from tqdm.auto import tqdm

    rows = [tokenize_row(tokenizer, row) for row in tqdm(dataset, desc=f"Tokenizing the {label} rows", unit="row")]
    return Dataset.from_list(rows)
