"""Engine events as the chat messages Gradio shows, and those messages read back (prompt turns, settings)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import gradio as gr

from medcot.config import GenerationParams
from medcot.engine import Engine
from medcot.errors import InputError
from medcot.events import AnswerDelta, Finished, ReasoningDelta, ReasoningDone, Stats
from medcot.prompt import Turn
from medcot.ui.stats_line import STATS_END, STATS_PREFIX, STOPPED_NOTICE, format_stats, is_stats_line

REASONING_TITLE = "Reasoning"
CARD_URL = "https://huggingface.co/alphaaico/Medical-Diagnosis-COT-Gemma3-270M"
_CARD = f"[Medical-Diagnosis-COT-Gemma3-270M]({CARD_URL})"
_TERMS = "Gemma is provided under Google's Gemma terms of use. API and MCP: see *Use via API* below."
ADAPTER_LABEL = "Fine-tuned (adapter)"
BASE_LABEL = "Base model, adapter off"
WAITING_FOR_ADAPTER = "_Waiting for the fine-tuned answer: the base model answers next._"
STOPPED_MARK = "_Stopped._"
LOADING_MARK = "⏳"  # the notice shown in place of an answer while the model loads; never an answer of its own
NOT_RUN_MARK = "_Not run: the fine-tuned answer did not complete._"


def message_text(content: Any) -> str:
    """Plain text of a message's content in any of Gradio's shapes (string, text blocks, list of those)."""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        return content.get("text", "") if isinstance(content.get("text"), str) else ""
    if isinstance(content, list | tuple):
        return "".join(message_text(part) for part in content)
    return ""


def as_dict(message: Any) -> dict[str, Any]:
    """A ChatMessage (or message dict) as a plain message dict."""
    if isinstance(message, dict):
        return message
    return {"role": message.role, "content": message.content, "metadata": dict(message.metadata or {})}


def turns_from_history(history: Any) -> list[Turn]:
    """Earlier exchanges from Gradio's message list: each question with its final answer.

    Reasoning (messages with a metadata title) and stats lines never go back into the prompt; a question with
    no answer (an error, a stop before any answer) is left out.
    """
    if history is None:
        return []
    if not isinstance(history, list | tuple):
        raise InputError("The chat history must be a list of messages.")
    turns: list[Turn] = []
    question: str | None = None
    for message in history:
        if not isinstance(message, dict) or "role" not in message:
            raise InputError("The chat history must be a list of messages with a role and content.")
        metadata = message.get("metadata") or {}
        text = message_text(message.get("content")).strip()
        if message["role"] == "user":
            question = text or None
        elif message["role"] == "assistant" and question and text and not metadata.get("title"):
            if is_stats_line(text) or is_loading_notice(text):
                continue
            turns.append(Turn(question, text))
            question = None
    return turns


def params_from(
    max_new_tokens: Any, temperature: Any, top_p: Any, top_k: Any, repetition_penalty: Any
) -> GenerationParams:
    """The sliders' values as checked GenerationParams (a missing value takes the default)."""
    defaults = GenerationParams()
    return GenerationParams(
        max_new_tokens=defaults.max_new_tokens if max_new_tokens is None else max_new_tokens,
        temperature=defaults.temperature if temperature is None else temperature,
        top_p=defaults.top_p if top_p is None else top_p,
        top_k=defaults.top_k if top_k is None else top_k,
        repetition_penalty=defaults.repetition_penalty if repetition_penalty is None else repetition_penalty,
    ).validated()


CLOSED_BY_APP = "closed by the app"  # the accordion's note when medcot.budget_forcing closed the reasoning


class ChatRenderer:
    """Turns engine events into the assistant messages Gradio shows: reasoning accordion, answer, stats.

    Each call to messages() builds new message objects: Gradio streams the difference between successive
    yields, so mutating the objects it already holds would send nothing.
    """

    def __init__(self) -> None:
        self.reasoning = ""
        self.reasoning_meta: dict[str, Any] = {"title": REASONING_TITLE, "status": "pending"}
        self.answer = ""
        self.stats = ""
        self.thinking = True  # until the model shows it does not reason

    def messages(self) -> list[gr.ChatMessage]:
        shown = [gr.ChatMessage(content=self.reasoning, metadata=dict(self.reasoning_meta))] if self.thinking else []
        shown += [gr.ChatMessage(content=self.answer)] if self.answer else []
        return shown + ([gr.ChatMessage(content=self.stats)] if self.stats else [])

    def apply(self, event: object) -> None:
        if isinstance(event, ReasoningDelta):
            self.reasoning += event.text
        elif isinstance(event, ReasoningDone):
            self.reasoning = self.reasoning.strip()
            self.reasoning_meta = {"title": REASONING_TITLE, "status": "done", "duration": round(event.duration, 1)}
            if event.cut_off:
                self.reasoning_meta["log"] = "cut off"
        elif isinstance(event, AnswerDelta):
            if not self.reasoning.strip():
                self.thinking = False  # no <think> block: drop the placeholder accordion
            self.answer += event.text
        elif isinstance(event, Finished):
            if self.reasoning_meta.get("status") == "pending":
                self.thinking = bool(self.reasoning.strip())
                self.reasoning_meta = {"title": REASONING_TITLE, "status": "done"}
            if event.stats.reasoning_closed_by_app:  # said on the accordion: the model did not close it itself
                self.reasoning_meta["log"] = CLOSED_BY_APP
            self.answer = self.answer.strip()
            self.stats = format_stats(event.stats, answered=bool(self.answer))


def mark_stopped(history: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """After Stop: no accordion keeps spinning; the last one says it was stopped."""
    history = list(history or [])
    for i, message in enumerate(history):
        metadata = message.get("metadata") or {}
        if metadata.get("status") == "pending":
            history[i] = {**message, "metadata": {**metadata, "status": "done", "log": "stopped"}}
    return history


def stopped_history(history: list[dict[str, Any]] | None, stats: Stats | None) -> list[dict[str, Any]]:
    """After Stop: ``mark_stopped``, then the stopped answer's stats line with its "stopped" notice (``stats``: the
    stream's Finished, which Gradio's cancellation kept from the chat handler; None when it never came)."""
    history = mark_stopped(history)
    last_question = max((i for i, m in enumerate(history) if m.get("role") == "user"), default=-1)
    reply = [m for m in history[last_question + 1 :] if m.get("role") == "assistant"]
    texts = [message_text(m.get("content")).strip() for m in reply]
    if last_question < 0 or any(is_stats_line(text) for text in texts):
        return history  # nothing asked, or the answer finished before the Stop arrived
    if stats is None:
        line = f"{STATS_PREFIX} stopped{STATS_END}\n\n{STOPPED_NOTICE}"
    else:
        answered = any(
            text and not (m.get("metadata") or {}).get("title") and not is_loading_notice(text)
            for m, text in zip(reply, texts, strict=True)
        )
        line = format_stats(replace(stats, stopped=True), answered)
    return [*history, {"role": "assistant", "content": line, "metadata": {}}]


def is_loading_notice(text: str) -> bool:
    return text.startswith(LOADING_MARK)


def loading_notice(engine: Engine) -> str:
    return (
        f"{LOADING_MARK} The model is still loading ({engine.status()}). "
        "Your question is kept and will be answered as soon as it is ready."
    )


def served_label(engine: Engine) -> str:
    """What answers in the main chat: the fine-tune, or the base model alone (said so, with its id)."""
    backend = engine.backend
    if backend is None or not backend.base_alone:
        return ADAPTER_LABEL
    return f"Base model `{backend.base_id}`, without the medical adapter"


def footer_markdown(engine: Engine) -> str:
    """The page's footer: the model the demo is for, and what actually answers (the fine-tune, or the base alone)."""
    backend = engine.backend
    card = (
        f"{_CARD} (also published as `alpha-ai/Medical-Diagnosis-COT-Gemma3-270M`), a LoRA fine-tune of Gemma 3 270M"
    )
    if backend is None:
        return f"Model: {card}, once loaded (the status line above says what is loaded). {_TERMS}"
    if backend.base_alone:
        return (
            f"Answering now: the base model `{backend.base_id}` without the medical adapter, not the fine-tune "
            f"{_CARD} this demo is for. {_TERMS}"
        )
    return f"Answering now: {card}, as `{backend.adapter_id}`. {_TERMS}"
