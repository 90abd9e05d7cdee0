"""Engine events as the chat messages Gradio shows, and those messages read back (prompt turns, settings)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import gradio as gr

from medcot.config import CARD_ADAPTERS, GenerationParams
from medcot.engine import Engine
from medcot.errors import InputError
from medcot.prompt import Turn
from medcot.ui.answers import AnswerRecord
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
CLOSED_BY_APP = "closed by the app"  # the accordion's note when medcot.answer_stream closed the reasoning


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
    """Earlier exchanges from Gradio's message list: each question with its final answer, never the reasoning
    (messages with a metadata title) nor stats lines; a question with no answer is left out."""
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
    max_new_tokens: Any,
    temperature: Any,
    top_p: Any,
    top_k: Any,
    repetition_penalty: Any,
    defaults: GenerationParams | None = None,
) -> GenerationParams:
    """The sliders' (or an API client's) values as checked GenerationParams; a value left unset (None) takes
    ``defaults``: the loaded model's own (Engine.generation_defaults), the card's when none are given."""
    values = (max_new_tokens, temperature, top_p, top_k, repetition_penalty)  # in GenerationParams.LIMITS' order
    chosen = {name: value for name, value in zip(GenerationParams.LIMITS, values, strict=True) if value is not None}
    return replace(defaults or GenerationParams(), **chosen).validated()


def answer_id(message: dict[str, Any]) -> str | None:
    """The id of the answer record (medcot.ui.answers) a chat message ends, or None."""
    metadata = message.get("metadata") or {}
    return None if metadata.get("title") or not metadata.get("id") else str(metadata["id"])


def last_question_index(messages: list[dict[str, Any]]) -> int | None:
    """Where the newest user message stands in a chat's messages; None before the first question."""
    return max((i for i, message in enumerate(messages) if message.get("role") == "user"), default=None)


def ending_message(content: str, record: AnswerRecord) -> gr.ChatMessage:
    """The message that ends an answer (stats line, stop or error mark), pointing at its record."""
    return gr.ChatMessage(content=content, metadata={"id": record.id})


def _reasoning_metadata(record: AnswerRecord) -> dict[str, Any]:
    if not record.finished and record.reasoning_duration is None:
        return {"title": REASONING_TITLE, "status": "pending"}
    metadata: dict[str, Any] = {"title": REASONING_TITLE, "status": "done"}
    if record.reasoning_duration is not None:
        metadata["duration"] = round(record.reasoning_duration, 1)
    if record.reasoning_cut_off:
        metadata["log"] = "cut off"
    if record.stats is not None and record.stats.reasoning_closed_by_app:  # the model did not close it itself
        metadata["log"] = CLOSED_BY_APP
    return metadata


def answer_messages(record: AnswerRecord, show_reasoning: bool = True) -> list[gr.ChatMessage]:
    """An answer's record (fed the engine's events) as the assistant messages Gradio shows: the reasoning accordion
    (unless "Show reasoning" is off; pending until the model shows it has none), the answer, the stats line.

    New message objects each call: Gradio streams the difference between yields, so mutated ones would send nothing.
    """
    shown = []
    # The accordion stays once reasoning was written; before that, until an answer starts or the stream finishes.
    if show_reasoning and (record.wrote_reasoning or not (record.finished or record.answer)):
        shown.append(gr.ChatMessage(content=record.reasoning, metadata=_reasoning_metadata(record)))
    if record.answer:
        shown.append(gr.ChatMessage(content=record.answer))
    if record.stats is not None:
        shown.append(ending_message(format_stats(record.stats, answered=bool(record.answer)), record))
    return shown


def stats_text(record: AnswerRecord) -> str | None:
    """The stats line of an answer as plain text (the export's), or "stopped" when Stop came before its stats."""
    if record.stats is None:
        return "stopped" if record.stopped else None
    line = format_stats(replace(record.stats, stopped=record.stopped or record.stats.stopped))
    return line.partition(STATS_END)[0].removeprefix(STATS_PREFIX).strip()


def mark_stopped(history: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """After Stop: no accordion keeps spinning; the last one says it was stopped."""
    history = list(history or [])
    for i, message in enumerate(history):
        metadata = message.get("metadata") or {}
        if metadata.get("status") == "pending":
            history[i] = {**message, "metadata": {**metadata, "status": "done", "log": "stopped"}}
    return history


def stopped_history(history: list[dict[str, Any]] | None, record: AnswerRecord | None) -> list[dict[str, Any]]:
    """After Stop: ``mark_stopped``, then the stopped answer's stats line with its "stopped" notice, pointing at its
    ``record`` (the session's newest answer; its stats None when its Finished never came)."""
    history = mark_stopped(history)
    last_question = last_question_index(history)
    if last_question is None or any(answer_id(m) for m in history[last_question + 1 :]):
        return history  # nothing asked, or the answer finished before the Stop arrived
    asked = message_text(history[last_question].get("content")).strip()
    line = f"{STATS_PREFIX} stopped{STATS_END}\n\n{STOPPED_NOTICE}"
    if record is None or record.question.strip() != asked:  # stopped before its answer began
        return [*history, {"role": "assistant", "content": line, "metadata": {}}]
    record.stopped = True
    if record.stats is not None:
        line = format_stats(replace(record.stats, stopped=True), answered=bool(record.answer.strip()))
    return [*history, as_dict(ending_message(line, record))]


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
    if backend.adapter_id in CARD_ADAPTERS:
        return f"Answering now: {card}, as `{backend.adapter_id}`. {_TERMS}"
    # a local folder or another repo (a self-trained adapter, say): never called the card's model
    return (
        f"Answering now: the adapter `{backend.adapter_id}` over `{backend.base_id}`, not the published {_CARD} "
        f"this demo is built for. {_TERMS}"
    )
