"""The conversation as Markdown and JSON files: questions, answers, reasoning marked as such, models and settings.

Free of the UI, which turns its chat view into `Exchange`s. Each JSON assistant message names its model: "served"
(what the app serves, see "models") or "base" (the base model with the adapter switched off, from the comparison).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from medcot import DISCLAIMER, __version__

FORMAT = "medcot-conversation"
FORMAT_VERSION = 1
FILE_STEM = "medcot-conversation"
APP_NAME = "MedCoT Space"
REASONING_NOTE = "the model's chain of thought as it wrote it: not an explanation anyone checked"
# Export folders older than this are removed when new ones are written (each is a few kB; the app keeps no more).
KEEP_EXPORTS_S = 3600


@dataclass(frozen=True)
class Reply:
    """One model's reply to a question."""

    answer: str
    reasoning: str | None = None  # None: the model wrote no reasoning
    notes: tuple[str, ...] = ()  # e.g. "reasoning cut off by the token limit", "stopped"
    stats: str | None = None  # the stats line as shown under the answer


@dataclass(frozen=True)
class Exchange:
    question: str
    reply: Reply | None  # None: no answer (an error, or stopped before any text)
    base_reply: Reply | None = None  # the base model's reply, adapter off, when the comparison was on


@dataclass(frozen=True)
class Conversation:
    exchanges: Sequence[Exchange]
    models: Mapping[str, Any]  # ids and how they were loaded
    generation: Mapping[str, Any]  # the generation settings
    reply_label: str = "Fine-tuned (adapter)"
    base_label: str = "Base model, adapter off"
    exported_at: datetime = field(default_factory=lambda: datetime.now(UTC))


def utc_time(moment: datetime | None = None) -> str:
    """``moment`` (now when left out) in UTC to the second, as the export and the feedback write it."""
    return (moment or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _reply_json(reply: Reply, model: str, label: str) -> dict[str, Any]:
    return {
        "role": "assistant",
        "model": model,
        "label": label,
        "reasoning": reply.reasoning,
        "answer": reply.answer,
        "notes": list(reply.notes),
        "stats": reply.stats,
    }


def to_json(conversation: Conversation) -> str:
    """JSON with a chat-style message list; each reply keeps reasoning and answer apart."""
    messages: list[dict[str, Any]] = []
    for exchange in conversation.exchanges:
        messages.append({"role": "user", "content": exchange.question})
        if exchange.reply is not None:
            messages.append(_reply_json(exchange.reply, "served", conversation.reply_label))
        if exchange.base_reply is not None:
            messages.append(_reply_json(exchange.base_reply, "base", conversation.base_label))
    document = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "app": {"name": APP_NAME, "version": __version__},
        "exported_at": utc_time(conversation.exported_at),
        "disclaimer": DISCLAIMER,
        "reasoning_note": f"'reasoning' is {REASONING_NOTE}.",
        "models": dict(conversation.models),
        "generation": dict(conversation.generation),
        "messages": messages,
    }
    return json.dumps(document, ensure_ascii=False, indent=2) + "\n"


def _quoted(text: str) -> str:
    """A Markdown blockquote: any text stays inside it, whatever Markdown or HTML it holds."""
    return "\n".join(f"> {line}".rstrip() for line in text.splitlines() or [""])


def _reply_markdown(reply: Reply | None, label: str) -> list[str]:
    lines = [f"### {label}", ""]
    if reply is None:
        return [*lines, "_No answer._", ""]
    if reply.reasoning is not None:
        lines += [f"**Reasoning** ({REASONING_NOTE}):", "", _quoted(reply.reasoning), ""]
    lines += ["**Answer:**", "", reply.answer or "_No answer._", ""]
    lines += [f"_{note}_" for note in reply.notes] + ([""] if reply.notes else [])
    if reply.stats:
        lines += [f"<sub>{reply.stats}</sub>", ""]
    return lines


def to_markdown(conversation: Conversation) -> str:
    models = ", ".join(f"{key}: `{value}`" for key, value in conversation.models.items() if value not in (None, ""))
    settings = ", ".join(f"{key} {value}" for key, value in conversation.generation.items())
    lines = [
        "# MedCoT conversation",
        "",
        f"> **{DISCLAIMER}**",
        "",
        f"- Exported: {utc_time(conversation.exported_at)} by {APP_NAME} {__version__}",
        f"- Models: {models}",
        f"- Generation settings: {settings}",
        "",
    ]
    for number, exchange in enumerate(conversation.exchanges, 1):
        lines += ["---", "", f"## Question {number}", "", _quoted(exchange.question), ""]
        lines += _reply_markdown(exchange.reply, conversation.reply_label)
        if exchange.base_reply is not None:
            lines += _reply_markdown(exchange.base_reply, conversation.base_label)
    return "\n".join(lines).rstrip() + "\n"


def write_files(conversation: Conversation, root: Path) -> tuple[Path, Path]:
    """Write the Markdown and JSON files in a folder per content under ``root``; return their paths. Folders older
    than KEEP_EXPORTS_S are removed, so a long-running app keeps only recent exports."""
    markdown, document = to_markdown(conversation), to_json(conversation)
    digest = hashlib.sha256((markdown + document).encode()).hexdigest()[:20]
    folder = root / digest
    folder.mkdir(parents=True, exist_ok=True)
    paths = folder / f"{FILE_STEM}.md", folder / f"{FILE_STEM}.json"
    for path, text in zip(paths, (markdown, document), strict=True):
        path.write_text(text, encoding="utf-8")
    cutoff = time.time() - KEEP_EXPORTS_S
    for old in root.iterdir():
        try:
            if old != folder and old.is_dir() and old.stat().st_mtime < cutoff:
                shutil.rmtree(old, ignore_errors=True)
        except OSError:  # removed by another request at the same moment
            continue
    return paths
