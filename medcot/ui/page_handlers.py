"""The page's controls beside the chat, one method each: the model's status line and the generation sliders
(refreshed while the model loads), the conversation's downloads, and deep links (medcot.ui.layout wires them)."""

from __future__ import annotations

import functools
import logging
from collections import OrderedDict
from dataclasses import astuple
from pathlib import Path
from typing import Any

import anyio
import gradio as gr

from medcot.config import GenerationParams
from medcot.engine import Engine
from medcot.export import write_files
from medcot.ui.answers import AnswerStore, session_of
from medcot.ui.compare import RELAY_WAIT_S, compare_controls
from medcot.ui.history import EXPORT_ROOT, conversation_from, is_settled
from medcot.ui.links import deep_link
from medcot.ui.rendering import footer_markdown, params_from

log = logging.getLogger(__name__)
FILLED_PAGES_KEPT = 10_000  # a forgotten page gets its sliders reset once more, no worse than before


def model_status_markdown(engine: Engine) -> str:
    if engine.ready:
        line = f"**Model:** {engine.status()}"
        style = engine.prompt_style()
        if style.primed:  # say plainly that the base was helped, and with which decoding
            line += f"  \n**Prompt:** {style.label}; decoding: {decoding_text(engine.generation_defaults())}."
        return line
    if engine.error:
        return f"**The model is not available.** {engine.error}"
    return f"**Loading the model:** {engine.status()}"


def decoding_text(params: GenerationParams) -> str:
    if params.temperature <= 0:
        sampling = "greedy"
    else:
        sampling = f"temperature {params.temperature:g}, top-p {params.top_p:g}, top-k {params.top_k}"
    return f"{sampling}, repetition penalty {params.repetition_penalty:g}, up to {params.max_new_tokens} tokens"


class PageHandlers:
    """The page's handlers for one engine, apart from the chat's (ChatHandlers)."""

    def __init__(self, engine: Engine, answers: AnswerStore | None = None) -> None:
        self.engine = engine
        self.answers = answers or AnswerStore()  # the chat's (ChatHandlers.answers): what the export reads
        self.defaults = engine.generation_defaults()  # before loading: the card's; refresh() updates the sliders
        # Pages whose sliders got the loaded model's defaults: the timer polls on in server mode, and filling them on
        # every tick would undo what the visitor set (sessions in order, the oldest forgotten past the cap).
        self._filled: OrderedDict[str, None] = OrderedDict()

    # -- the status line and the sliders, while loading and once loaded ------------------------------------------
    def refresh(self, request: gr.Request | None = None) -> tuple[Any, ...]:
        """The model's status line, the timer that polls it, the compare controls, the footer and, once loaded and
        once per page, the generation sliders at the loaded model's defaults (a primed base decodes differently)."""
        session = session_of(request)
        return self._refresh(session, fill_sliders=self.engine.ready and session not in self._filled)

    def open_page(self, request: gr.Request | None = None) -> tuple[Any, ...]:
        """refresh() for a page that opens: its sliders (unset in the page's config) at the defaults known now."""
        return self._refresh(session_of(request), fill_sliders=True)

    def _refresh(self, session: str | None, fill_sliders: bool) -> tuple[Any, ...]:
        state, text = compare_controls(self.engine)
        sliders: tuple[Any, ...] = (gr.skip(),) * 5
        if fill_sliders:
            if self.engine.ready and session is not None:
                self._filled[session] = None
                while len(self._filled) > FILLED_PAGES_KEPT:
                    self._filled.popitem(last=False)
            self.defaults = self.engine.generation_defaults()
            sliders = tuple(gr.Slider(value=value) for value in astuple(self.defaults))
        # The timer polls while loading, in server mode (the server can come and go) and while the step compiles.
        polling = not self.engine.wait_until_loaded(0) or self.engine.status_may_change
        return (
            model_status_markdown(self.engine),
            gr.Timer(active=polling),
            gr.Checkbox(**state),
            text,
            *sliders,
            footer_markdown(self.engine),
        )

    # -- deep links ------------------------------------------------------------------------------------------------
    def open_link(self, request: gr.Request) -> tuple[Any, Any, bool]:
        """A deep link's question and comparison filled in; True when it should also be asked."""
        question, run, want_compare, warning = deep_link(dict(getattr(request, "query_params", {}) or {}))
        if warning:
            gr.Warning(warning)
        if self.engine.ready:
            want_compare = want_compare and self.engine.can_compare
        return (
            gr.Textbox(value=question) if question else gr.skip(),
            gr.Checkbox(value=True) if want_compare else gr.skip(),
            bool(question and run),
        )

    async def wait_for_model(self, run: bool) -> bool:
        """For a ?run=1 link: wait for the model, then say whether it can be asked."""
        if not run:
            return False
        await anyio.to_thread.run_sync(self.engine.wait_until_loaded, RELAY_WAIT_S)
        return self.engine.ready

    # -- the downloads --------------------------------------------------------------------------------------------
    def export_files(
        self,
        history: Any,
        base_history: Any,
        max_new_tokens: Any,
        temperature: Any,
        top_p: Any,
        top_k: Any,
        repetition_penalty: Any,
        request: gr.Request | None = None,
    ) -> tuple[gr.DownloadButton, gr.DownloadButton]:
        """Both download buttons pointed at fresh files of the conversation (disabled while there is none); left as
        they are while an answer streams (its export comes when it is done or stopped)."""
        if not (is_settled(history) and is_settled(base_history)):
            return gr.skip(), gr.skip()
        try:
            params = params_from(max_new_tokens, temperature, top_p, top_k, repetition_penalty, self.defaults)
        except ValueError:
            params = self.defaults
        answers = functools.partial(self.answers.get, session_of(request))
        files: tuple[Path, Path] | tuple[None, None] = (None, None)
        try:
            conversation = conversation_from(history, base_history, answers, self.engine, params)
            if conversation.exchanges:
                files = write_files(conversation, EXPORT_ROOT)
        except Exception:  # an export must never break the chat
            log.exception("export failed")
        markdown, document = (gr.DownloadButton(value=path, interactive=path is not None) for path in files)
        return markdown, document
