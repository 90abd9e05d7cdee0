"""medcot.ui.feedback: a rating writes the answer's exact record (nothing identifying); the CommitScheduler pushes
the JSONL with only the Hub calls replaced; a failing push never reaches the page; off unless configured."""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import gradio as gr
import pytest
from huggingface_hub import CommitInfo, HfApi, RepoUrl

from medcot.config import GenerationParams, Settings
from medcot.engine import Engine
from medcot.ui.chat_handlers import ChatHandlers
from medcot.ui.feedback import FEEDBACK_NOTE, FeedbackHandlers, FeedbackLog
from medcot.ui.layout import build_demo
from medcot.ui.rendering import as_dict
from tests.helpers.tiny import ADAPTER_ANSWER, QUESTIONS
from tests.helpers.ui_calls import GREEDY, expected_feedback, replies, request

DATASET = "someone/medcot-feedback"


class HubWithoutNetwork(HfApi):
    """A real HfApi whose two Hub calls (the repo's creation, the commit's upload) are replaced: what the
    CommitScheduler would have sent is kept instead, or the upload fails when ``failing``."""

    def __init__(self, failing: bool = False) -> None:
        super().__init__(token="hf_not_a_real_token")
        self.failing = failing
        self.commits: list[dict[str, bytes]] = []

    def create_repo(self, repo_id: str, **_: Any) -> RepoUrl:  # type: ignore[override]
        return RepoUrl(f"https://huggingface.co/datasets/{repo_id}")

    def create_commit(self, repo_id: str, operations: Any, **_: Any) -> CommitInfo:  # type: ignore[override]
        if self.failing:
            raise ConnectionError("the Hub cannot be reached")
        self.commits.append({op.path_in_repo: op.path_or_fileobj.read() for op in operations})
        url = f"https://huggingface.co/datasets/{repo_id}/commit/{'0' * 40}"
        return CommitInfo(url, "Scheduled Commit", "", "0" * 40)


def answered(engine: Engine, session: str = "s1") -> tuple[ChatHandlers, list[dict[str, Any]]]:
    chat = ChatHandlers(engine, engine.stream)
    updates = asyncio.run(replies(chat.respond(QUESTIONS[0], [], *GREEDY, request(session))))
    return chat, [{"role": "user", "content": QUESTIONS[0]}, *(as_dict(message) for message in updates[-1])]


def like(index: int, liked: bool | str = True) -> gr.LikeData:
    return gr.LikeData(None, {"index": index, "value": "", "liked": liked})


def lines(log: FeedbackLog) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.path.read_text(encoding="utf-8").splitlines()]


def test_a_rating_writes_the_answers_exact_record_and_a_comment_follows_it(engine: Engine, tmp_path: Path) -> None:
    chat, history = answered(engine)
    log = FeedbackLog(tmp_path)
    rater = FeedbackHandlers(engine, chat.answers, log)
    for index in range(1, len(history)):  # any message of the answer: reasoning, answer or stats line
        feedback_id, box = rater.rate(history, like(index, liked=index % 2 == 1), request())
        assert box["visible"] is True
    written = lines(log)
    assert len(written) == len(history) - 1
    record = written[-1]
    assert record["feedback_id"] == feedback_id and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", record["time"])
    rating = "like" if (len(history) - 1) % 2 == 1 else "dislike"
    assert {k: v for k, v in record.items() if k not in ("feedback_id", "time")} == expected_feedback(
        engine, rating, asdict(GenerationParams(*GREEDY))
    )
    assert "s1" not in log.path.read_text()  # no session, IP or user name

    cleared, closed = rater.comment(feedback_id, "  Too long for a quick read.  ")
    assert cleared is None and closed["visible"] is False
    assert lines(log)[-1] == {
        "format": "medcot-feedback",
        "feedback_id": feedback_id,
        "time": lines(log)[-1]["time"],
        "comment": "Too long for a quick read.",
    }
    assert rater.rate(history, like(1), request("another-page")) == (gr.skip(), gr.skip())  # not its answer
    assert rater.rate(history, like(1, liked=""), request()) == (gr.skip(), gr.skip())  # a rating taken back
    assert len(lines(log)) == len(history)


def test_the_scheduler_pushes_the_jsonl_with_only_the_hub_calls_replaced(engine: Engine, tmp_path: Path) -> None:
    hub = HubWithoutNetwork()
    log = FeedbackLog(tmp_path, DATASET, hf_api=hub)
    try:
        chat, history = answered(engine)
        FeedbackHandlers(engine, chat.answers, log).rate(history, like(2), request())
        log.scheduler.trigger().result(timeout=30)
    finally:
        log.scheduler.stop()
    pushed = {path: content for commit in hub.commits for path, content in commit.items()}
    assert list(pushed) == [f"feedback/{log.path.name}"]
    assert [json.loads(line)["answer"] for line in pushed[f"feedback/{log.path.name}"].splitlines()] == [
        ADAPTER_ANSWER
    ]


def test_a_failing_push_never_reaches_the_page(engine: Engine, tmp_path: Path) -> None:
    failing = FeedbackLog(tmp_path / "push", DATASET, hf_api=HubWithoutNetwork(failing=True))
    unreachable = HubWithoutNetwork()
    unreachable.create_repo = lambda *a, **k: (_ for _ in ()).throw(ConnectionError("offline"))  # type: ignore
    offline = FeedbackLog(tmp_path / "offline", DATASET, hf_api=unreachable)
    assert offline.scheduler is None  # no push at all: kept on disk, the page unchanged
    try:
        chat, history = answered(engine)
        for log in (failing, offline):
            rater = FeedbackHandlers(engine, chat.answers, log)
            feedback_id, _ = rater.rate(history, like(2), request())
            if log.scheduler is not None:
                with pytest.raises(ConnectionError):
                    log.scheduler.trigger().result(timeout=30)
            rater.comment(feedback_id, "still works")
            assert [line.get("comment") for line in lines(log)] == [None, "still works"]
    finally:
        failing.scheduler.stop()


def test_feedback_is_off_without_its_settings_and_says_what_it_keeps_when_on(engine: Engine, tmp_path: Path) -> None:
    def shown(demo: gr.Blocks) -> tuple[Any, bool, bool]:
        chatbot = next(b for b in demo.blocks.values() if isinstance(b, gr.Chatbot) and b.elem_id == "chat")
        note = any(isinstance(b, gr.Markdown) and b.value == FEEDBACK_NOTE for b in demo.blocks.values())
        rated = any(fn.name == "rate" for fn in demo.fns.values())
        return chatbot.feedback_options, note, rated

    assert FeedbackLog.from_settings(engine.settings) is None
    assert shown(build_demo(engine)) == (None, False, False)
    configured = Engine(replace(engine.settings, feedback_dir=tmp_path / "fb"), engine.loaded)
    assert shown(build_demo(configured)) == (("Like", "Dislike"), True, True)
    from_env = Settings.from_env({"MEDCOT_FEEDBACK_DIR": str(tmp_path / "env"), "MEDCOT_FEEDBACK_DATASET": DATASET})
    assert (from_env.feedback_dir, from_env.feedback_dataset) == (tmp_path / "env", DATASET)
