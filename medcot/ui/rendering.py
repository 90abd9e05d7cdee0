"""Engine events as the chat messages Gradio shows, and those messages read back (prompt turns, settings)."""

from __future__ import annotations

from typing import Any

import gradio as gr

from medcot.config import GenerationParams
from medcot.errors import InputError
from medcot.events import AnswerDelta, Finished, ReasoningDelta, ReasoningDone, format_stats, is_stats_line
from medcot.prompt import Turn

REASONING_TITLE = "Reasoning"
ADAPTER_LABEL = "Fine-tuned (adapter)"
BASE_LABEL = "Base model, adapter off"
WAITING_FOR_ADAPTER = "_Waiting for the fine-tuned answer: the base model answers next._"
STOPPED_MARK = "_Stopped._"
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
            if is_stats_line(text):
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


CLOSED_BY_APP = "closed by the app"  # the accordion's note when Engine._generate closed the reasoning


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
            self.stats = format_stats(event.stats)


def mark_stopped(history: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """After Stop: no accordion keeps spinning; the last one says it was stopped."""
    history = list(history or [])
    for i, message in enumerate(history):
        metadata = message.get("metadata") or {}
        if metadata.get("status") == "pending":
            history[i] = {**message, "metadata": {**metadata, "status": "done", "log": "stopped"}}
    return history
