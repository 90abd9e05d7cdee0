"""The page's two chats as one Conversation for the export (medcot.export writes the files): the questions as
shown, each reply from the answer record its messages point at (medcot.ui.answers), never from its Markdown."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from medcot.config import GenerationParams
from medcot.engine import Engine
from medcot.export import Conversation, Exchange, Reply
from medcot.ui.answers import AnswerRecord
from medcot.ui.rendering import BASE_LABEL, answer_id, last_question_index, message_text, served_label, stats_text

EXPORT_ROOT = Path(tempfile.gettempdir()) / "medcot-exports"


def _reply_from(messages: list[dict[str, Any]], answers: Callable[[str], AnswerRecord | None]) -> Reply | None:
    """One question's reply from the record its messages point at (None: no answer ended there)."""
    for message in messages:
        found = answer_id(message)
        record = answers(found) if found else None
        if record is not None:
            return record.reply(stats_text(record))
    return None


def exchanges_from_history(
    history: Any, answers: Callable[[str], AnswerRecord | None]
) -> list[tuple[str, Reply | None]]:
    """(question, reply) pairs from a chat's message list, in order; malformed entries are skipped, never fatal."""
    pairs: list[tuple[str, list[dict[str, Any]]]] = []
    for message in history if isinstance(history, list | tuple) else []:
        if not isinstance(message, dict):
            continue
        if message.get("role") == "user":
            pairs.append((message_text(message.get("content")).strip(), []))
        elif message.get("role") == "assistant" and pairs:
            pairs[-1][1].append(message)
    return [(question, _reply_from(replies, answers)) for question, replies in pairs]


def conversation_from(
    history: Any,
    base_history: Any,
    answers: Callable[[str], AnswerRecord | None],
    engine: Engine,
    params: GenerationParams,
) -> Conversation:
    """The page's two chats as one export, each reply from its record (``answers``: a record by its id); each base
    reply goes with the same question, in order."""
    base = exchanges_from_history(base_history, answers)
    exchanges = []
    for question, reply in exchanges_from_history(history, answers):
        match = next((i for i, (asked, _) in enumerate(base) if asked == question), None)
        base_reply = None
        if match is not None:
            base_reply = base[match][1] or Reply("", notes=("The base model did not answer.",))
            del base[: match + 1]
        exchanges.append(Exchange(question, reply, base_reply))
    return Conversation(
        exchanges, models_of(engine), asdict(params), reply_label=served_label(engine), base_label=BASE_LABEL
    )


def models_of(engine: Engine) -> dict[str, Any]:
    """What answered, for the export and the feedback: the backend's facts, and how the model was prompted."""
    if engine.backend is None:
        return {"base": engine.settings.base_model, "adapter": engine.settings.adapter}
    return {**engine.backend.facts(), "prompt": engine.prompt_style().label}


def is_settled(history: Any) -> bool:
    """Whether a chat's newest answer is over: a message after the newest question ends an answer (its stats line,
    a stop, error or not-run mark)."""
    messages = [m for m in history if isinstance(m, dict)] if isinstance(history, list | tuple) else []
    asked = last_question_index(messages)
    return asked is None or any(answer_id(message) for message in messages[asked + 1 :])
