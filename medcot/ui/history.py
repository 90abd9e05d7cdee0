"""The page's two chats read back as one Conversation for the export (medcot.export writes the files)."""

from __future__ import annotations

import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from medcot.config import GenerationParams
from medcot.engine import Engine
from medcot.export import Conversation, Exchange, Reply
from medcot.ui.rendering import (
    BASE_LABEL,
    CLOSED_BY_APP,
    NOT_RUN_MARK,
    REASONING_TITLE,
    STOPPED_MARK,
    WAITING_FOR_ADAPTER,
    is_loading_notice,
    message_text,
    served_label,
)
from medcot.ui.stats_line import (
    ANSWER_CUT_OFF_NOTICE,
    CUT_OFF_NOTICE,
    NO_ANSWER_NOTICE,
    STATS_END,
    STATS_PREFIX,
    STOPPED_NOTICE,
    is_stats_line,
)

EXPORT_ROOT = Path(tempfile.gettempdir()) / "medcot-exports"


def _reply_from(messages: list[dict[str, Any]]) -> Reply | None:
    """One answer's messages as shown (reasoning accordion, answer, stats line) back as an export Reply."""
    reasoning: str | None = None
    answer: list[str] = []
    notes: list[str] = []
    stats: str | None = None
    for message in messages:
        metadata = message.get("metadata") or {}
        text = message_text(message.get("content")).strip()
        if metadata.get("title") == REASONING_TITLE:
            reasoning = text
            if metadata.get("log") == "cut off":
                notes.append("Reasoning cut off by the token limit (no closing tag).")
            elif metadata.get("log") == "stopped":
                notes.append("Stopped by the user.")
            elif metadata.get("log") == CLOSED_BY_APP:
                notes.append("The model left its reasoning open; the app closed it for the answer.")
        elif is_stats_line(text):
            line, _, notice = text.partition(STATS_END)
            stats = line.removeprefix(STATS_PREFIX).strip()
            if CUT_OFF_NOTICE in notice:
                notes.append("The token limit cut the reasoning off before an answer.")
            elif STOPPED_NOTICE in notice:
                notes.append("Stopped by the user.")
            elif ANSWER_CUT_OFF_NOTICE.partition("(")[0] in notice:
                notes.append("The token limit cut the answer off.")
            elif NO_ANSWER_NOTICE in notice:
                notes.append("The model returned no answer.")
        elif text and text != WAITING_FOR_ADAPTER and not is_loading_notice(text):
            answer.append(text)
    if reasoning is None and not answer and stats is None:
        return None
    return Reply("\n\n".join(answer), reasoning, tuple(dict.fromkeys(notes)), stats)


def exchanges_from_history(history: Any) -> list[tuple[str, Reply | None]]:
    """(question, reply) pairs from a chat's message list, in order; malformed entries are skipped, never fatal."""
    pairs: list[tuple[str, list[dict[str, Any]]]] = []
    for message in history if isinstance(history, list | tuple) else []:
        if not isinstance(message, dict):
            continue
        if message.get("role") == "user":
            pairs.append((message_text(message.get("content")).strip(), []))
        elif message.get("role") == "assistant" and pairs:
            pairs[-1][1].append(message)
    return [(question, _reply_from(replies)) for question, replies in pairs]


def conversation_from(history: Any, base_history: Any, engine: Engine, params: GenerationParams) -> Conversation:
    """The page's two chats as one export: each base reply goes with the same question, in order."""
    base = exchanges_from_history(base_history)
    exchanges = []
    for question, reply in exchanges_from_history(history):
        match = next((i for i, (asked, _) in enumerate(base) if asked == question), None)
        base_reply = None
        if match is not None:
            base_reply = base[match][1] or Reply("", notes=("The base model did not answer.",))
            del base[: match + 1]
        exchanges.append(Exchange(question, reply, base_reply))
    models: dict[str, Any] = {"base": engine.settings.base_model, "adapter": engine.settings.adapter}
    if engine.backend is not None:  # a base alone may be shown worked examples first: the prompt says so
        models = {**engine.backend.facts(), "prompt": engine.prompt_style().label}
    return Conversation(exchanges, models, asdict(params), reply_label=served_label(engine), base_label=BASE_LABEL)


def last_question_index(messages: list[dict[str, Any]]) -> int | None:
    """Where the newest user message stands in a chat's messages; None before the first question."""
    return max((i for i, message in enumerate(messages) if message.get("role") == "user"), default=None)


def is_settled(history: Any) -> bool:
    """Whether a chat's newest answer is over: its stats line (finished, stopped, cut off, empty), or the base
    column's end marks and errors. A question with nothing after it yet is not: its answer is on its way."""
    messages = [m for m in history if isinstance(m, dict)] if isinstance(history, list | tuple) else []
    asked = last_question_index(messages)
    if asked is None:
        return True
    texts = [message_text(m.get("content")).strip() for m in messages[asked + 1 :]]
    return any(is_stats_line(t) or t in (STOPPED_MARK, NOT_RUN_MARK) or t.startswith("⚠️") for t in texts)
