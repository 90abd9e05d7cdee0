"""The chat's event handlers, one method each: the chat (/chat), the /ask API and MCP tool, Stop, the compare and
"Show reasoning" checkboxes and a closed page (the base column's are medcot.ui.compare's, the page's other controls
medcot.ui.page_handlers'; medcot.ui.layout wires them)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import gradio as gr

from medcot.config import GenerationParams
from medcot.engine import Engine
from medcot.errors import InputError, UserError
from medcot.request import Query, StreamFn, clean_question
from medcot.ui.answers import AnswerRecord, AnswerStore, NoAnswerError, api_text, session_of
from medcot.ui.compare import BaseColumn, BaseRelay, error_text
from medcot.ui.rendering import (
    answer_messages,
    last_question_index,
    loading_notice,
    params_from,
    stopped_history,
    turns_from_history,
)
from medcot.ui.streaming import UPDATE_INTERVAL_S, CoalescedEvents, iterate_in_thread, wait_for_model, when_task_ends

log = logging.getLogger(__name__)


class ChatHandlers:
    """Every handler of the page for one engine. ``stream`` is the engine's stream (ZeroGPU-wrapped on a Space)."""

    def __init__(self, engine: Engine, stream: StreamFn, relay: BaseRelay | None = None) -> None:
        self.engine = engine
        self.stream = stream
        self.relay = relay or BaseRelay()
        self.refused: set[str | None] = set()  # sessions whose last chat request ended in an error, not a Stop
        self.answers = AnswerStore()  # every answer shown, as data: the export and the feedback read it
        self.hidden_reasoning: set[str | None] = set()  # sessions whose "Show reasoning" switch is off
        self.base = BaseColumn(engine, stream, self.relay, self.answers, self.shows_reasoning)

    def params(self, *values: Any) -> GenerationParams:
        """Checked generation settings; a value left unset (None) takes the loaded model's own default."""
        return params_from(*values, self.engine.generation_defaults())

    def shows_reasoning(self, session: str | None) -> bool:
        return session not in self.hidden_reasoning

    # -- the chat (ChatInterface's /chat) -------------------------------------------------------------------
    async def respond(
        self,
        message: str,
        history: list[dict[str, Any]],
        # None (an API client that sets nothing; Gradio reads these defaults for /chat): the loaded model's own.
        max_new_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        repetition_penalty: float | None = None,
        request: gr.Request | None = None,  # Gradio fills it in; not an API input
    ) -> AsyncIterator[list[gr.ChatMessage]]:
        """The fine-tuned answer, streamed; with the comparison on, the base model's too (to the relay): after it
        locally (one copy of the weights), at the same time from a model server."""
        cancel = threading.Event()
        when_task_ends(cancel.set)  # Stop, a closed tab: also when Gradio drops this generator unclosed
        session = session_of(request)
        relay = self.relay
        channel = relay.open(session) if session in relay.comparing and self.engine.can_compare else None
        events: CoalescedEvents | None = None
        beside: asyncio.Task[None] | None = None
        values = (max_new_tokens, temperature, top_p, top_k, repetition_penalty)
        try:
            query = Query(message, turns_from_history(history), self.params(*values))  # bad input: refused now
            record = self.answers.add(session, AnswerRecord(message, query.params))
            async for _ in wait_for_model(self.engine, self.engine.settings.load_wait_s):
                yield [gr.ChatMessage(content=loading_notice(self.engine))]  # the question stays; answered next
            if None in values:  # the loaded model's own defaults, known once it has loaded
                query = replace(query, params=self.params(*values))
                record.params = query.params
            if channel is not None:
                channel.put_nowait(("question", clean_question(message), query.params))
                if self.engine.base_runs_beside:
                    beside = asyncio.ensure_future(self.base.run(channel, query))
                    when_task_ends(beside.cancel)
            show_reasoning = self.shows_reasoning(session)
            stream = self.stream(query, cancel)
            events = CoalescedEvents(
                iterate_in_thread(stream, cancel, record.begin_stream() if session else None), UPDATE_INTERVAL_S
            )
            yield answer_messages(record, show_reasoning)
            async for batch in events:
                for event in batch:
                    record.apply(event)
                yield answer_messages(record, show_reasoning)
            if beside is not None:
                await beside
            elif channel is not None:
                await self.base.run(channel, query)
        except (UserError, gr.Error) as exc:  # gr.Error: already readable (the ZeroGPU glue's, or spaces' own)
            self.refused.add(session)
            if channel is not None:
                channel.put_nowait(("error", error_text(exc)))
            raise (exc if isinstance(exc, gr.Error) else gr.Error(str(exc), print_exception=False)) from None
        except Exception as exc:
            self.refused.add(session)
            log.exception("generation failed")
            raise gr.Error(f"Something went wrong while answering ({type(exc).__name__}). Please try again.") from None
        finally:
            if events is not None:
                await events.aclose()
            if beside is not None and not beside.done():  # Stop, or the fine-tuned answer failed: the base stops too
                beside.cancel()
                with contextlib.suppress(BaseException):
                    await beside
            if channel is not None and session:
                relay.close(session, channel)

    # -- the /ask API and MCP tool -------------------------------------------------------------------------------
    async def ask(
        self,
        question: str,
        max_new_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        repetition_penalty: float | None = None,
        include_reasoning: bool = False,
    ) -> str:
        """Answer a medical question with Medical-Diagnosis-COT-Gemma3-270M. Research demo, NOT for clinical use.

        A sampling value left unset takes the loaded model's own default, as the page's sliders do: the model
        card's for the fine-tune; the base alone, shown worked examples, decodes at temperature 0.3, repetition
        penalty 1.15. An answer that ended short says why; no answer at all is an error naming the reason.

        Args:
            question: The medical question, in English.
            max_new_tokens: Most tokens to generate, reasoning included (1-4096); unset: the app's default.
            temperature: Sampling temperature (0 for greedy decoding, up to 2); unset: the model's default.
            top_p: Nucleus sampling probability mass (0.01-1); unset: the model's default.
            top_k: Sample from the k most likely tokens (0 disables); unset: the model's default.
            repetition_penalty: Penalty for repeated tokens (1 = none, up to 2); unset: the model's default.
            include_reasoning: Also return the model's step-by-step reasoning before the answer.

        Returns:
            The final answer; with include_reasoning, "Reasoning:" and "Answer:" sections.
        """
        values = (max_new_tokens, temperature, top_p, top_k, repetition_penalty)
        try:
            self.params(*values)  # bad input is refused before waiting for a loading model
            if not isinstance(include_reasoning, bool):
                raise InputError("include_reasoning must be true or false.")
            cancel = threading.Event()
            async for _ in wait_for_model(self.engine, self.engine.settings.load_wait_s):
                pass  # an API client waits for a loading model, up to MEDCOT_LOAD_WAIT_S
            record = AnswerRecord(question, self.params(*values))
            async for event in iterate_in_thread(self.stream(Query(question, (), record.params), cancel), cancel):
                record.apply(event)
            return api_text(record, include_reasoning)
        except (UserError, NoAnswerError) as exc:
            raise gr.Error(str(exc), print_exception=False) from None

    # -- Stop, the compare checkbox and a closed page ------------------------------------------------------------
    def stop(self, history: list[dict[str, Any]] | None, request: gr.Request) -> list[dict[str, Any]]:
        """Stop: the stopped answer settled (no spinner) with its stats and a "stopped" notice."""
        session = session_of(request)
        record = self.answers.latest(session)
        if record is not None:
            record.wait_for_stats()  # the stopped answer's Finished, into its record
        return stopped_history(history, record)

    def set_compare(self, on: bool, request: gr.Request) -> tuple[Any, Any]:
        """The compare checkbox: show or hide the base column, and remember the session's choice for the relay."""
        # While loading only a ?compare=1 link can tick it: kept, and unticked by PageHandlers.refresh if unavailable.
        engine = self.engine
        on = bool(on) and (engine.can_compare or (engine.backend is None and engine.error is None))
        self.relay.set_compare(session_of(request), on)
        return gr.Column(visible=on), gr.Chatbot(show_label=on)

    def set_show_reasoning(self, on: bool, request: gr.Request) -> str:
        """The "Show reasoning" switch, for the session's next answers; returned to the browser's gr.BrowserState as
        a word (a stored False reads back as unset)."""
        (self.hidden_reasoning.discard if on else self.hidden_reasoning.add)(session_of(request))
        return "shown" if on else "hidden"

    def recall_show_reasoning(self, remembered: Any, request: gr.Request) -> bool:
        """A page that opens: the switch as this browser left it (on when never set)."""
        on = remembered != "hidden"
        self.set_show_reasoning(on, request)
        return on

    def restore_after_failure(
        self, history: list[dict[str, Any]] | None, question: str | None, request: gr.Request
    ) -> tuple[Any, Any, Any]:
        """The page after its chat request failed, the textbox enabled again. Refused or failed (the error toast says
        why): the chat as before the question, which is back in the box. Stopped (a failure to Gradio too): as is."""
        enabled = {"interactive": True, "submit_btn": True, "stop_btn": False}
        session = session_of(request)
        if session not in self.refused:
            return gr.skip(), gr.skip(), gr.update(**enabled)
        self.refused.discard(session)
        history = list(history or [])
        asked = last_question_index(history)
        kept = history if asked is None else history[:asked]
        return kept, kept, gr.update(**enabled, value=question if isinstance(question, str) else "")

    def forget(self, request: gr.Request) -> None:
        """A closed page: drop everything kept for its session."""
        session = session_of(request)
        self.relay.forget(session)
        self.refused.discard(session)
        self.answers.forget(session)
        self.hidden_reasoning.discard(session)
