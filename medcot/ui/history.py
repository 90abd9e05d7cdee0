"""The page's two chats read back as one Conversation for the export (medcot.export writes the files)."""

from __future__ import annotations

import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from medcot.config import GenerationParams
from medcot.engine import Engine
from medcot.events import CUT_OFF_NOTICE, STATS_END, STATS_PREFIX, is_stats_line
from medcot.export import Conversation, Exchange, Reply
from medcot.ui.rendering import (
    ADAPTER_LABEL,
    BASE_LABEL,
    CLOSED_BY_APP,
    REASONING_TITLE,
    WAITING_FOR_ADAPTER,
    message_text,
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
        elif text and text != WAITING_FOR_ADAPTER:
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
    loaded = engine.loaded
    models: dict[str, Any] = {"base": engine.settings.base_model, "adapter": engine.settings.adapter}
    if loaded is not None:
        models = {
            "base": loaded.base_id,
            "adapter": loaded.adapter_id,
            "kind": loaded.kind,
            "merged": loaded.merged,
            "device": loaded.device,
            "dtype": loaded.dtype,
            "prompt": engine.prompt_style().label,  # a base alone may be shown worked examples first
        }
    served = ADAPTER_LABEL if loaded is not None and loaded.kind != "base" else "Base model"
    return Conversation(exchanges, models, asdict(params), reply_label=served, base_label=BASE_LABEL)
