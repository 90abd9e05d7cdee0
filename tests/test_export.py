"""medcot.export: the conversation as Markdown and JSON, reasoning marked as such, with models and settings."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from medcot import DISCLAIMER, __version__
from medcot.config import GenerationParams
from medcot.export import (
    FILE_STEM,
    KEEP_EXPORTS_S,
    Conversation,
    Exchange,
    Reply,
    to_json,
    to_markdown,
    write_files,
)

MODELS = {"base": "google/gemma-3-270m-it", "adapter": "alphaaico/Medical-Diagnosis-COT-Gemma3-270M", "merged": False}
WHEN = datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)


def conversation(*exchanges: Exchange) -> Conversation:
    return Conversation(list(exchanges), MODELS, asdict(GenerationParams(temperature=0.0)), exported_at=WHEN)


COMPARED = Exchange(
    "Ankle swelling on a thiazolidinedione: likely cause?",
    Reply("Fluid retention.", "TZDs raise renal sodium reabsorption.", stats="first token 0.10 s · 30.0 tok/s"),
    Reply("Rest and fluids.", None, stats="first token 0.05 s · 31.0 tok/s"),
)
CUT_OFF = Exchange("Long question?", Reply("", "Step one… step two…", ("Reasoning cut off by the token limit.",)))


def test_json_keeps_reasoning_and_answer_apart_with_models_and_settings() -> None:
    document = json.loads(to_json(conversation(COMPARED, CUT_OFF, Exchange("Failed?", None))))
    assert document["format"] == "medcot-conversation" and document["format_version"] == 1
    assert document["app"] == {"name": "MedCoT Space", "version": __version__}
    assert document["exported_at"] == "2025-03-04T05:06:07Z"
    assert document["disclaimer"] == DISCLAIMER
    assert document["models"] == MODELS
    assert document["generation"] == {
        "max_new_tokens": 512,
        "temperature": 0.0,
        "top_p": 0.95,
        "top_k": 64,
        "repetition_penalty": 1.0,
    }
    roles = [(m["role"], m.get("model")) for m in document["messages"]]
    assert roles == [
        ("user", None),
        ("assistant", "served"),
        ("assistant", "base"),
        ("user", None),
        ("assistant", "served"),
        ("user", None),
    ]
    served, base = document["messages"][1:3]
    assert served["reasoning"] == "TZDs raise renal sodium reabsorption." and served["answer"] == "Fluid retention."
    assert served["label"] == "Fine-tuned (adapter)" and base["label"] == "Base model, adapter off"
    assert base["reasoning"] is None and base["answer"] == "Rest and fluids."
    assert document["messages"][4]["notes"] == ["Reasoning cut off by the token limit."]


def test_markdown_marks_the_reasoning_and_names_models_settings_and_disclaimer() -> None:
    markdown = to_markdown(conversation(COMPARED, CUT_OFF))
    assert markdown.startswith("# MedCoT conversation\n")
    assert DISCLAIMER in markdown and "2025-03-04T05:06:07Z" in markdown and __version__ in markdown
    assert "`alphaaico/Medical-Diagnosis-COT-Gemma3-270M`" in markdown and "`google/gemma-3-270m-it`" in markdown
    assert "temperature 0.0" in markdown and "max_new_tokens 512" in markdown
    assert "## Question 1" in markdown and "## Question 2" in markdown
    assert "**Reasoning** (the model's chain of thought" in markdown
    assert "> TZDs raise renal sodium reabsorption." in markdown
    assert "### Fine-tuned (adapter)" in markdown and "### Base model, adapter off" in markdown
    assert markdown.index("Fluid retention.") < markdown.index("Rest and fluids.")
    assert "_Reasoning cut off by the token limit._" in markdown
    assert "<sub>first token 0.10 s · 30.0 tok/s</sub>" in markdown


def test_model_text_cannot_break_out_of_its_block() -> None:
    hostile = "line one\n\n# Not a heading\n</details><script>alert(1)</script>\n---"
    markdown = to_markdown(conversation(Exchange("## Injected?\n\ntext", Reply("ok", hostile))))
    quoted = [line for line in markdown.splitlines() if "Not a heading" in line or "script" in line]
    assert quoted and all(line.startswith("> ") for line in quoted)
    assert "> ## Injected?" in markdown and "\n## Injected?" not in markdown
    document = json.loads(to_json(conversation(Exchange("q", Reply("ok", hostile)))))
    assert document["messages"][1]["reasoning"] == hostile  # JSON keeps the text exactly


def test_unicode_survives_both_formats() -> None:
    exchange = Exchange("Fièvre 🫀 — 发烧?", Reply("Paracétamol 💊", "思考"))
    assert "Fièvre 🫀 — 发烧?" in to_markdown(conversation(exchange))
    assert json.loads(to_json(conversation(exchange)))["messages"][1]["answer"] == "Paracétamol 💊"


def test_write_files_reuses_a_folder_per_content_and_prunes_old_ones(tmp_path: Path) -> None:
    markdown, document = write_files(conversation(COMPARED), tmp_path)
    assert (markdown.name, document.name) == (f"{FILE_STEM}.md", f"{FILE_STEM}.json")
    assert json.loads(document.read_text(encoding="utf-8"))["messages"][0]["content"] == COMPARED.question
    assert markdown.read_text(encoding="utf-8") == to_markdown(conversation(COMPARED))
    assert write_files(conversation(COMPARED), tmp_path) == (markdown, document)  # same content, same files

    old = markdown.parent
    stale = time.time() - KEEP_EXPORTS_S - 10
    os.utime(old, (stale, stale))
    newer, _ = write_files(conversation(COMPARED, CUT_OFF), tmp_path)
    assert newer.parent != old and not old.exists()
    assert [p.name for p in tmp_path.iterdir()] == [newer.parent.name]
