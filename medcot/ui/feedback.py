"""Feedback for stakeholder previews (on with MEDCOT_FEEDBACK_DIR or MEDCOT_FEEDBACK_DATASET): like / dislike on an
answer and an optional comment, kept as JSONL from the answer's record, with nothing that identifies the person (no
IP, user name or session). With a dataset, huggingface_hub's CommitScheduler pushes the folder; a failure is logged.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any

import gradio as gr
from huggingface_hub import CommitScheduler, HfApi

from medcot import __version__
from medcot.config import Settings, default_cache_dir
from medcot.engine import Engine
from medcot.export import APP_NAME, REASONING_NOTE, utc_time
from medcot.ui.answers import AnswerRecord, AnswerStore, session_of
from medcot.ui.history import models_of
from medcot.ui.rendering import answer_id

log = logging.getLogger(__name__)
FORMAT = "medcot-feedback"
FEEDBACK_NOTE = (
    "Like / Dislike under an answer (and an optional comment) sends feedback on it. What is kept: the question, the "
    "model's reasoning and answer, the model ids, the generation settings, the app version and the time; nothing "
    "that identifies you."
)
PUSH_EVERY_MIN = 5.0  # CommitScheduler's interval: one commit per five minutes at most


class FeedbackLog:
    """Appends records to this process's JSONL file under ``folder``, pushed to the Hub ``dataset`` if given."""

    def __init__(
        self, folder: Path, dataset: str | None = None, token: str | None = None, hf_api: HfApi | None = None
    ) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"feedback-{uuid.uuid4().hex[:12]}.jsonl"
        self.lock = threading.Lock()
        self.scheduler: CommitScheduler | None = None
        if dataset:
            try:
                self.scheduler = CommitScheduler(
                    repo_id=dataset,
                    repo_type="dataset",
                    folder_path=folder,
                    path_in_repo="feedback",
                    every=PUSH_EVERY_MIN,
                    token=token,
                    hf_api=hf_api,
                    allow_patterns=["*.jsonl"],
                )
                self.lock = self.scheduler.lock  # never append while the scheduler lists the files
            except Exception as exc:  # the Hub unreachable, a bad token: feedback stays on disk, the page works
                log.error("feedback: cannot push to the dataset %s (%s); kept in %s only", dataset, exc, folder)

    @classmethod
    def from_settings(cls, settings: Settings) -> FeedbackLog | None:
        """The log the settings ask for, or None: neither MEDCOT_FEEDBACK_DIR nor MEDCOT_FEEDBACK_DATASET set."""
        if settings.feedback_dir is None and settings.feedback_dataset is None:
            return None
        folder = settings.feedback_dir or (settings.cache_dir or default_cache_dir()) / "feedback"
        return cls(folder, settings.feedback_dataset, settings.hf_token)

    def write(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, ensure_ascii=False) + "\n"
        with self.lock, self.path.open("a", encoding="utf-8") as file:
            file.write(line)


def liked_record(history: list[dict[str, Any]], index: Any, answers: AnswerStore, session: str | None) -> Any:
    """The answer record behind a liked message: the one its answer's ending message (between the questions around
    ``index``) points at."""
    if isinstance(index, list | tuple):
        index = index[0]
    if not isinstance(index, int) or not 0 <= index < len(history):
        return None
    start = next((i + 1 for i in range(index, -1, -1) if history[i].get("role") == "user"), 0)
    end = next((i for i in range(index + 1, len(history)) if history[i].get("role") == "user"), len(history))
    for message in history[start:end]:
        found = answer_id(message)
        if found:
            return answers.get(session, found)
    return None


def feedback_record(record: AnswerRecord, liked: bool, engine: Engine) -> dict[str, Any]:
    """What one like or dislike keeps: the answer as data, the models, the settings, the app and the time."""
    return {
        "format": FORMAT,
        "format_version": 1,
        "feedback_id": uuid.uuid4().hex,
        "time": utc_time(),
        "rating": "like" if liked else "dislike",
        "question": record.question.strip(),
        "reasoning": record.reasoning.strip() or None,
        "reasoning_note": f"'reasoning' is {REASONING_NOTE}.",
        "answer": record.answer.strip(),
        "notes": list(record.notes),
        "models": models_of(engine),
        "generation": asdict(record.params),
        "app": {"name": APP_NAME, "version": __version__},
    }


class FeedbackHandlers:
    """A like or dislike writes its record at once; a comment after it, a line that points at it."""

    def __init__(self, engine: Engine, answers: AnswerStore, log_: FeedbackLog) -> None:
        self.engine = engine
        self.answers = answers
        self.log = log_

    def rate(self, history: list[dict[str, Any]] | None, data: gr.LikeData, request: gr.Request) -> tuple[Any, Any]:
        """A like or dislike: its record written; the comment box opened for it (the feedback id kept in the page)."""
        if not isinstance(data.liked, bool):  # a rating taken back: nothing to keep
            return gr.skip(), gr.skip()
        record = liked_record(list(history or []), data.index, self.answers, session_of(request))
        if record is None or not record.finished:
            gr.Warning("Feedback can be left on a finished answer only.")
            return gr.skip(), gr.skip()
        entry = feedback_record(record, data.liked, self.engine)
        try:
            self.log.write(entry)
        except OSError:
            log.exception("feedback: could not be written")
            gr.Warning("Your feedback could not be saved.")
            return gr.skip(), gr.skip()
        return entry["feedback_id"], gr.update(visible=True, value="")

    def comment(self, feedback_id: str | None, text: str | None) -> tuple[Any, Any]:
        """The optional comment on the last rating; the box closes again."""
        text = (text or "").strip()[:2000]
        if feedback_id and text:
            self.log.write({"format": FORMAT, "feedback_id": feedback_id, "time": utc_time(), "comment": text})
            gr.Info("Thank you: your comment was saved.")
        return None, gr.update(visible=False, value="")
