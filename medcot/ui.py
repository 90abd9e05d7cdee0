"""The Gradio app: a chat with a live reasoning accordion and stats, the base-model comparison beside it, deep links,
the conversation export, an `/ask` API/MCP tool, and the model's status."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import anyio
import gradio as gr

from medcot import DISCLAIMER
from medcot.config import GenerationParams
from medcot.engine import Engine, Finished, InputError, Stats, StreamEvent, clean_question
from medcot.export import Conversation, Exchange, Reply, write_files
from medcot.generation import GenerationError
from medcot.loading import ModelLoadError
from medcot.prompt import PromptTooLongError, Turn
from medcot.reasoning import AnswerDelta, ReasoningDelta, ReasoningDone
from medcot.zerogpu import StreamFn, gpu_stream

log = logging.getLogger(__name__)

TITLE = "MedCoT · Medical chain-of-thought demo"
CARD_URL = "https://huggingface.co/alphaaico/Medical-Diagnosis-COT-Gemma3-270M"
# The model card's two questions first, then two in the same style.
EXAMPLES = [
    "A 65-year-old with exertional dyspnea and orthopnea presents with bilateral pitting edema and raised JVP. "
    "What initial pharmacologic therapy is indicated?",
    "Elderly patient with new ankle swelling on thiazolidinedione—likely cause?",
    "A 24-year-old has fever, neck stiffness and a petechial rash. What is the most urgent next step?",
    "Which electrolyte abnormality is most typical of refeeding syndrome?",
]
REASONING_TITLE = "Reasoning"
# Streamed UI updates are coalesced to this interval: each update re-sends a diff of the whole reply, and Gradio's
# ChatInterface re-processes the conversation for it in the event loop, holding the GIL that generation needs. On 2
# CPU cores the app decoded 1.8-2.7% faster at 10 updates/s than at 20 (4 tokens per update at 40 tok/s).
UPDATE_INTERVAL_S = 0.1
QUEUE_POLL_S = 0.01
STATS_PREFIX = "<sub>⏱"  # marks the stats line, which is shown under an answer but never fed back to the model
CUT_OFF_NOTICE = (
    "**The reasoning was cut off by the token limit** before an answer. "
    "Raise *Max new tokens* in Generation settings and ask again."
)
USER_ERRORS = (InputError, PromptTooLongError, ModelLoadError, GenerationError, ValueError)
ADAPTER_LABEL = "Fine-tuned (adapter)"
BASE_LABEL = "Base model, adapter off"
COMPARE_LABEL = "Compare with the base model"
COMPARE_NOTE = (
    "The base model answers the same prompt with the adapter switched off, after the fine-tuned answer: one copy "
    "of the weights serves both, so the two never run at once."
)
WAITING_FOR_ADAPTER = "_Waiting for the fine-tuned answer: the base model answers next._"
# Deep links: ?q=<question> pre-fills the question, &run=1 also asks it, &compare=1 turns the comparison on.
QUERY_QUESTION, QUERY_RUN, QUERY_COMPARE = "q", "run", "compare"
_YES = ("1", "true", "yes", "on")
# How long the base column waits for its chat handler to start (it may queue behind other users' requests).
RELAY_WAIT_S = 600.0
EXPORT_ROOT = Path(tempfile.gettempdir()) / "medcot-exports"
CSS = """
#disclaimer { border-left: 4px solid #d97706; padding: 0.4rem 0.8rem; background: rgba(217, 119, 6, 0.08); }
#model-status { font-size: 0.85rem; opacity: 0.85; }
#compare-note, #export-row { font-size: 0.85rem; opacity: 0.85; }
"""
# Asks the pre-filled question of a ?run=1 link, as a click on the send button would (from the browser, so the
# chat's own submit chain runs: its Stop button, its history, its queue).
AUTORUN_JS = """
(run) => {
  if (!run) return;
  const root = document.querySelector("gradio-app")?.shadowRoot ?? document;
  const send = root.querySelector("#question button.submit-button");
  if (send) send.click();
}
"""


def _text(content: Any) -> str:
    """Plain text of a message's content in any of Gradio's shapes (string, text blocks, list of those)."""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        return content.get("text", "") if isinstance(content.get("text"), str) else ""
    if isinstance(content, list | tuple):
        return "".join(_text(part) for part in content)
    return ""


def turns_from_history(history: Any) -> list[Turn]:
    """Earlier exchanges from Gradio's message list: each question with its final answer.

    Reasoning (messages with a metadata title) and stats lines never go back into the prompt; a question with
    no answer (an error, a stop before any answer) is left out.
    """
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
        text = _text(message.get("content")).strip()
        if message["role"] == "user":
            question = text or None
        elif message["role"] == "assistant" and question and text and not metadata.get("title"):
            if text.startswith(STATS_PREFIX):
                continue
            turns.append(Turn(question, text))
            question = None
    return turns


def params_from(
    max_new_tokens: Any, temperature: Any, top_p: Any, top_k: Any, repetition_penalty: Any
) -> GenerationParams:
    defaults = GenerationParams()
    return GenerationParams(
        max_new_tokens=defaults.max_new_tokens if max_new_tokens is None else max_new_tokens,
        temperature=defaults.temperature if temperature is None else temperature,
        top_p=defaults.top_p if top_p is None else top_p,
        top_k=defaults.top_k if top_k is None else top_k,
        repetition_penalty=defaults.repetition_penalty if repetition_penalty is None else repetition_penalty,
    ).validated()


def format_stats(stats: Stats) -> str:
    parts = []
    if stats.time_to_first_token is not None:
        parts.append(f"first token {stats.time_to_first_token:.2f} s")
    parts.append(f"{stats.tokens_per_second:.1f} tok/s")
    parts.append(f"{stats.new_tokens} tokens ({stats.reasoning_tokens} reasoning · {stats.answer_tokens} answer)")
    line = f"{STATS_PREFIX} " + " · ".join(parts)
    if stats.turns_dropped:
        line += f" · {stats.turns_dropped} oldest turn(s) left out to fit the context"
    line += "</sub>"
    if stats.reasoning_cut_off and not stats.stopped:
        line += "\n\n" + CUT_OFF_NOTICE
    return line


class ChatRenderer:
    """Turns engine events into the assistant messages Gradio shows: reasoning accordion, answer, stats.

    Each call to messages() builds new message objects: Gradio streams the difference between successive
    yields, so mutating the objects it already holds would send nothing.
    """

    def __init__(self) -> None:
        self.reasoning = ""
        self.reasoning_meta: dict[str, Any] = {"title": REASONING_TITLE, "status": "pending"}
        self.answer = ""
        self.stats = ""
        self.thinking = True  # until the model shows it does not reason

    def messages(self) -> list[gr.ChatMessage]:
        shown = [gr.ChatMessage(content=self.reasoning, metadata=dict(self.reasoning_meta))] if self.thinking else []
        shown += [gr.ChatMessage(content=self.answer)] if self.answer else []
        return shown + ([gr.ChatMessage(content=self.stats)] if self.stats else [])

    def apply(self, event: object) -> None:
        if isinstance(event, ReasoningDelta):
            self.reasoning += event.text
        elif isinstance(event, ReasoningDone):
            self.reasoning = self.reasoning.strip()
            self.reasoning_meta = {"title": REASONING_TITLE, "status": "done", "duration": round(event.duration, 1)}
            if event.cut_off:
                self.reasoning_meta["log"] = "cut off"
        elif isinstance(event, AnswerDelta):
            if not self.reasoning.strip():
                self.thinking = False  # no <think> block: drop the placeholder accordion
            self.answer += event.text
        elif isinstance(event, Finished):
            if self.reasoning_meta.get("status") == "pending":
                self.thinking = bool(self.reasoning.strip())
                self.reasoning_meta = {"title": REASONING_TITLE, "status": "done"}
            self.answer = self.answer.strip()
            self.stats = format_stats(event.stats)


async def iterate_in_thread(iterator: Iterator[StreamEvent], cancel: threading.Event) -> AsyncIterator[StreamEvent]:
    """Consume a blocking event stream from async code, stoppable at any moment.

    Gradio closes a sync generator on Stop by calling close() from the event loop while a worker thread may be
    inside next(); that close fails ("generator already executing") and generation runs on to the token limit.
    Here cancellation (Stop, a client's cancel, a closed tab) sets ``cancel`` instead, which the engine checks
    after every token, so the generation thread ends within a token whatever the worker thread is doing.
    """
    done = object()
    try:
        while (event := await anyio.to_thread.run_sync(next, iterator, done, abandon_on_cancel=True)) is not done:
            yield event
    finally:
        cancel.set()


class CoalescedEvents:
    """A stream's events (or the items relayed to the base column) in batches, one streamed UI update per batch, at
    most one per `interval`.

    - Fetching starts when it is made: the chat handler sends an empty reply (the pending reasoning accordion)
      first, and generation begins while Gradio sends that reply, not after it (time to first token).
    - The first batch goes out at once (time to first token), and so does any batch that ends with something other
      than text (reasoning done, finished).
    - Text is never held longer than `interval`, even while the stream stalls (a slow token, a busy machine).
    """

    def __init__(self, events: AsyncIterator[Any], interval: float) -> None:
        self._events = events
        self._interval = interval
        self._next: asyncio.Future[Any] | None = asyncio.ensure_future(anext(events, _END))
        self._held: list[Any] = []
        self._sent_at = -math.inf

    def __aiter__(self) -> CoalescedEvents:
        return self

    async def __anext__(self) -> list[Any]:
        while self._next is not None:
            wait = None if not self._held else max(0.0, self._sent_at + self._interval - time.monotonic())
            done, _ = await asyncio.wait({self._next}, timeout=wait)
            if not done:  # the interval is over and the stream has nothing new: send what is held
                return self._send()
            event = self._next.result()
            if event is _END:
                self._next = None
                break
            self._next = asyncio.ensure_future(anext(self._events, _END))
            self._held.append(event)
            text = isinstance(event, ReasoningDelta | AnswerDelta)
            if not text or time.monotonic() - self._sent_at >= self._interval:
                return self._send()
        if self._held:  # the stream ended on held text
            return self._send()
        raise StopAsyncIteration

    def _send(self) -> list[Any]:
        batch, self._held = self._held, []
        self._sent_at = time.monotonic()
        return batch

    async def aclose(self) -> None:
        """Stop the stream, also while an event is being fetched (Stop, a closed tab)."""
        if self._next is not None:
            self._next.cancel()  # cancels the fetch inside iterate_in_thread, whose cleanup sets the cancel event
            with contextlib.suppress(BaseException):  # its outcome (an error, the cancellation) no longer matters
                await self._next
            self._next = None
        await self._events.aclose()


_END = object()  # a stream's end, as anext() returns it to CoalescedEvents


def mark_stopped(history: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """After Stop: no accordion keeps spinning; the last one says it was stopped."""
    history = list(history or [])
    for i, message in enumerate(history):
        metadata = message.get("metadata") or {}
        if metadata.get("status") == "pending":
            history[i] = {**message, "metadata": {**metadata, "status": "done", "log": "stopped"}}
    return history


def _reply_from(messages: list[dict[str, Any]]) -> Reply | None:
    """One answer's messages as shown (reasoning accordion, answer, stats line) back as an export Reply."""
    reasoning: str | None = None
    answer: list[str] = []
    notes: list[str] = []
    stats: str | None = None
    for message in messages:
        metadata = message.get("metadata") or {}
        text = _text(message.get("content")).strip()
        if metadata.get("title") == REASONING_TITLE:
            reasoning = text
            if metadata.get("log") == "cut off":
                notes.append("Reasoning cut off by the token limit (no closing tag).")
            elif metadata.get("log") == "stopped":
                notes.append("Stopped by the user.")
        elif text.startswith(STATS_PREFIX):
            line, _, notice = text.partition("</sub>")
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
            pairs.append((_text(message.get("content")).strip(), []))
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
        }
    served = ADAPTER_LABEL if loaded is not None and loaded.kind != "base" else "Base model"
    return Conversation(exchanges, models, asdict(params), reply_label=served, base_label=BASE_LABEL)


def deep_link(query: Mapping[str, str]) -> tuple[str | None, bool, bool, str | None]:
    """Read ?q=, &run= and &compare= from the page URL: (question or None, run it, compare, a warning or None).

    The question is checked as any question is; a bad one is not pre-filled (and never run), with a warning.
    """
    raw = query.get(QUERY_QUESTION)
    run = str(query.get(QUERY_RUN, "")).strip().lower() in _YES
    compare = str(query.get(QUERY_COMPARE, "")).strip().lower() in _YES
    if raw is None or not "".join(ch for ch in str(raw) if ch.isprintable()).strip():
        return None, False, compare, None  # nothing to fill in: not worth a warning
    try:
        question = clean_question(str(raw))
    except InputError as exc:
        return None, False, compare, f"The question in the link was not used: {exc}"
    return question, run, compare, None


class BaseRelay:
    """Carries the base model's answer from the chat handler to the base column of the same page session.

    The chat handler is ChatInterface's `/chat` endpoint, whose inputs and outputs API clients rely on, so it cannot
    gain the second column as an output. The column's own handler, started by the same submit, shows what the chat
    handler sends here. Sessions with the comparison switched on are remembered from the checkbox's change events.

    The two handlers start in either order. A channel the column has not taken yet waits for it, until the next
    question's channel replaces it or, once the chat handler is done with it, for CLOSED_GRACE_S; a column handler
    gives up when a newer one starts for its session (its question's chat handler never ran) or after a timeout.
    """

    END = object()
    CLOSED_GRACE_S = 10.0

    def __init__(self) -> None:
        self.comparing: set[str] = set()
        self._pending: dict[str, tuple[asyncio.Queue[Any], list[float]]] = {}  # channel, [closed at] once closed
        self._takers: dict[str, int] = {}

    def set_compare(self, session: str | None, on: bool) -> None:
        if session:
            (self.comparing.add if on else self.comparing.discard)(session)

    def forget(self, session: str | None) -> None:
        for registry in (self._pending, self._takers):
            registry.pop(session or "", None)
        self.comparing.discard(session or "")

    def open(self, session: str) -> asyncio.Queue[Any]:
        channel: asyncio.Queue[Any] = asyncio.Queue()
        self._pending[session] = (channel, [])  # replaces one no column took: that question is over
        return channel

    def close(self, session: str, channel: asyncio.Queue[Any]) -> None:
        channel.put_nowait(self.END)
        pending = self._pending.get(session)
        if pending is not None and pending[0] is channel:
            pending[1].append(time.monotonic())

    async def take(self, session: str, timeout: float = RELAY_WAIT_S) -> asyncio.Queue[Any] | None:
        """The channel of the session's current question, or None (superseded, or nothing after ``timeout``)."""
        ticket = self._takers[session] = self._takers.get(session, 0) + 1
        deadline = time.monotonic() + timeout
        while self._takers.get(session) == ticket and time.monotonic() < deadline:
            pending = self._pending.get(session)
            if pending is not None:
                channel, closed = pending
                if closed and time.monotonic() - closed[0] > self.CLOSED_GRACE_S:
                    del self._pending[session]  # an old question's, whose column never came
                else:
                    del self._pending[session]
                    return channel
            await asyncio.sleep(0.05)
        return None

    async def items(self, channel: asyncio.Queue[Any]) -> AsyncIterator[Any]:
        """What the chat handler puts on ``channel``, up to its END."""
        while (item := await channel.get()) is not self.END:
            yield item


def model_status_markdown(engine: Engine) -> str:
    if engine.ready:
        return f"**Model:** {engine.status()}"
    if engine.error:
        return f"**The model is not available.** {engine.error}"
    return f"**Loading the model:** {engine.status()}"


def compare_controls(engine: Engine) -> tuple[dict[str, Any], str]:
    """The compare checkbox's state and the note beside it, for what the engine has loaded (or not yet)."""
    reason = engine.compare_unavailable()
    if reason is None:
        return {"interactive": True}, COMPARE_NOTE
    if engine.loaded is None and engine.error is None:
        return {"interactive": False, "value": False}, "Available once the model has loaded, if an adapter is loaded."
    return {"interactive": False, "value": False}, f"Not available: {reason}"


def build_demo(engine: Engine, stream: StreamFn | None = None) -> gr.Blocks:
    """The whole app for one engine. ``stream`` defaults to engine.stream (the ZeroGPU-wrapped one on a Space)."""
    stream = stream or gpu_stream(engine)
    defaults = engine.settings.generation_defaults
    relay = BaseRelay()

    async def respond(
        message: str,
        history: list[dict[str, Any]],
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        top_k: int,
        repetition_penalty: float,
        request: gr.Request | None = None,  # Gradio fills it in; not an API input
    ) -> AsyncIterator[list[gr.ChatMessage]]:
        cancel = threading.Event()
        session = getattr(request, "session_hash", None)
        channel = relay.open(session) if session in relay.comparing and engine.can_compare else None
        events: CoalescedEvents | None = None
        try:
            params = params_from(max_new_tokens, temperature, top_p, top_k, repetition_penalty)
            turns = turns_from_history(history)
            if channel is not None:
                channel.put_nowait(("question", clean_question(message)))
            view = ChatRenderer()
            events = CoalescedEvents(
                iterate_in_thread(stream(message, turns, params, True, cancel), cancel), UPDATE_INTERVAL_S
            )
            yield view.messages()
            async for batch in events:
                for event in batch:
                    view.apply(event)
                yield view.messages()
            if channel is not None:
                await run_base(channel, message, turns, params)
        except (*USER_ERRORS, gr.Error) as exc:  # gr.Error: raised readable by the ZeroGPU glue or spaces
            if channel is not None:
                channel.put_nowait(("error", _message(exc)))
            raise _as_gr_error(exc) from None
        except Exception as exc:
            log.exception("generation failed")
            raise gr.Error(f"Something went wrong while answering ({type(exc).__name__}). Please try again.") from None
        finally:
            if events is not None:
                await events.aclose()
            if channel is not None and session:
                relay.close(session, channel)

    async def run_base(channel: asyncio.Queue[Any], message: str, turns: list[Turn], params: GenerationParams) -> None:
        """The same prompt through the base model (adapter off); its events go to the base column."""
        cancel = threading.Event()  # its own: the adapter stream's event is set once that stream ends
        channel.put_nowait(("start", None))
        try:
            async for event in iterate_in_thread(stream(message, turns, params, False, cancel), cancel):
                channel.put_nowait(event)
        except (*USER_ERRORS, gr.Error) as exc:
            channel.put_nowait(("error", _message(exc)))
        except Exception as exc:  # the fine-tuned answer is already shown: report this one in its column only
            log.exception("base-model generation failed")
            channel.put_nowait(("error", f"Something went wrong while answering ({type(exc).__name__})."))

    async def show_base(
        base_history: list[dict[str, Any]] | None, compare: bool, request: gr.Request
    ) -> AsyncIterator[Any]:
        """The base column: the compared question, then the base model's answer as the chat handler relays it."""
        session = getattr(request, "session_hash", None)
        if not compare or not session or not engine.can_compare:
            yield gr.skip()
            return
        channel = await relay.take(session)
        if channel is None:
            yield gr.skip()
            return
        relay.set_compare(session, True)  # the checkbox said so at submit, whatever its change event's timing
        shown = list(base_history or [])
        view: ChatRenderer | None = None
        asked = finished = False
        tail: list[Any] = []
        items = CoalescedEvents(relay.items(channel), UPDATE_INTERVAL_S)
        try:
            async for batch in items:
                for item in batch:
                    kind = item[0] if isinstance(item, tuple) else None
                    if kind == "question":
                        asked = True
                        shown.append(gr.ChatMessage(role="user", content=item[1]))
                        tail = [gr.ChatMessage(content=WAITING_FOR_ADAPTER)]
                    elif not asked:
                        continue  # the question was refused: the fine-tuned column says why, this one stays as it was
                    elif kind == "start":
                        view = ChatRenderer()
                        tail = view.messages()
                    elif kind == "error":
                        tail = [*(view.messages() if view else []), gr.ChatMessage(content=f"⚠️ {item[1]}")]
                        view = None
                    elif view is not None:
                        view.apply(item)
                        finished = finished or isinstance(item, Finished)
                        tail = view.messages()
                if asked:
                    yield [*shown, *tail]
        finally:
            await items.aclose()
        if not asked:
            yield gr.skip()
            return
        if tail and tail[-1].content == WAITING_FOR_ADAPTER:
            tail = [gr.ChatMessage(content="_Not run: the fine-tuned answer did not complete._")]
        elif view is not None and not finished:
            tail = [*view.messages(), gr.ChatMessage(content="_Stopped._")]
        yield mark_stopped([_as_dict(m) for m in [*shown, *tail]])

    async def ask(
        question: str,
        max_new_tokens: int = defaults.max_new_tokens,
        temperature: float = defaults.temperature,
        top_p: float = defaults.top_p,
        top_k: int = defaults.top_k,
        repetition_penalty: float = defaults.repetition_penalty,
        include_reasoning: bool = False,
    ) -> str:
        """Answer a medical question with Medical-Diagnosis-COT-Gemma3-270M. Research demo, NOT for clinical use.

        Args:
            question: The medical question, in English.
            max_new_tokens: Most tokens to generate, reasoning included (1-4096).
            temperature: Sampling temperature (0 for greedy decoding, up to 2).
            top_p: Nucleus sampling probability mass (0.01-1).
            top_k: Sample from the k most likely tokens (0 disables).
            repetition_penalty: Penalty for repeated tokens (1 = none, up to 2).
            include_reasoning: Also return the model's step-by-step reasoning before the answer.

        Returns:
            The final answer; with include_reasoning, "Reasoning:" and "Answer:" sections.
        """
        try:
            params = params_from(max_new_tokens, temperature, top_p, top_k, repetition_penalty)
            if not isinstance(include_reasoning, bool):
                raise InputError("include_reasoning must be true or false.")
            reasoning, answer = [], []
            cancel = threading.Event()
            async for event in iterate_in_thread(stream(question, [], params, True, cancel), cancel):
                if isinstance(event, ReasoningDelta):
                    reasoning.append(event.text)
                elif isinstance(event, AnswerDelta):
                    answer.append(event.text)
        except USER_ERRORS as exc:
            raise gr.Error(str(exc), print_exception=False) from None
        final = "".join(answer).strip()
        if include_reasoning:
            return f"Reasoning:\n{''.join(reasoning).strip()}\n\nAnswer:\n{final}"
        return final

    def export_files(history: Any, base_history: Any, *sliders: Any) -> tuple[gr.DownloadButton, gr.DownloadButton]:
        """Both download buttons pointed at fresh files of the conversation (disabled while there is none)."""
        try:
            params = params_from(*sliders)
        except ValueError:
            params = defaults
        try:
            conversation = conversation_from(history, base_history, engine, params)
            if not conversation.exchanges:
                raise LookupError("nothing to export yet")
            markdown, document = write_files(conversation, EXPORT_ROOT)
        except Exception as exc:  # an export must never break the chat
            if not isinstance(exc, LookupError):
                log.exception("export failed")
            return gr.DownloadButton(value=None, interactive=False), gr.DownloadButton(value=None, interactive=False)
        return gr.DownloadButton(value=str(markdown), interactive=True), gr.DownloadButton(
            value=str(document), interactive=True
        )

    with gr.Blocks(title=TITLE, fill_height=True, delete_cache=(3600, 3600)) as demo:
        gr.Markdown(f"# 🩺 {TITLE}")
        gr.Markdown(f"⚠️ **{DISCLAIMER}**", elem_id="disclaimer")
        status = gr.Markdown(model_status_markdown(engine), elem_id="model-status")
        checkbox_state, note = compare_controls(engine)
        with gr.Row(equal_height=True):
            compare = gr.Checkbox(
                **{"value": False, **checkbox_state},
                label=COMPARE_LABEL,
                elem_id="compare",
                scale=0,
                min_width=260,
            )
            compare_note = gr.Markdown(note, elem_id="compare-note")
        sliders = [
            gr.Slider(1, 4096, value=defaults.max_new_tokens, step=1, label="Max new tokens", render=False),
            gr.Slider(0.0, 2.0, value=defaults.temperature, step=0.05, label="Temperature (0 = greedy)", render=False),
            gr.Slider(0.01, 1.0, value=defaults.top_p, step=0.01, label="Top-p", render=False),
            gr.Slider(0, 1000, value=defaults.top_k, step=1, label="Top-k (0 = off)", render=False),
            gr.Slider(
                1.0, 2.0, value=defaults.repetition_penalty, step=0.05, label="Repetition penalty", render=False
            ),
        ]
        with gr.Row(equal_height=False):
            with gr.Column(scale=1):
                chat = gr.ChatInterface(
                    respond,
                    chatbot=gr.Chatbot(
                        elem_id="chat",
                        label=ADAPTER_LABEL,
                        show_label=False,
                        placeholder="Ask a medical question. The model reasons step by step before it answers.",
                        buttons=["copy", "copy_all"],
                        scale=1,
                    ),
                    # stop_btn=True: a custom Textbox's own stop_btn (default False) decides whether Stop is shown.
                    textbox=gr.Textbox(
                        placeholder="Ask a medical question…",
                        elem_id="question",
                        label="Your question",
                        show_label=False,
                        submit_btn=True,
                        stop_btn=True,
                    ),
                    additional_inputs=sliders,
                    # render=False: ChatInterface renders its own copy of this accordion under the chat; rendered
                    # here too, an empty duplicate would appear above the chat.
                    additional_inputs_accordion=gr.Accordion("Generation settings", open=False, render=False),
                    examples=[[question] for question in EXAMPLES],
                    run_examples_on_click=True,
                    api_name="chat",
                    api_description="Chat; streams the message list (reasoning, answer, stats). Not for clinical use.",
                    fill_height=True,
                )
            with gr.Column(scale=1, visible=False) as base_column:
                base_chat = gr.Chatbot(
                    elem_id="base-chat",
                    label=BASE_LABEL,
                    show_label=True,
                    placeholder="The base model's answers (adapter off) appear here.",
                    buttons=["copy", "copy_all"],
                    scale=1,
                )
        with gr.Row(elem_id="export-row"):
            gr.Markdown("Download the conversation (reasoning marked as such, with the models and settings):")
            export_md = gr.DownloadButton(
                "Markdown", value=None, interactive=False, size="sm", elem_id="export-md", scale=0, min_width=140
            )
            export_json = gr.DownloadButton(
                "JSON", value=None, interactive=False, size="sm", elem_id="export-json", scale=0, min_width=140
            )

        # Stop cancels the stream; this settles the accordion it left pending. The chat's state is set from the
        # visible chat too: Gradio syncs it only after a stream that completes, and the next reply is drawn from
        # the state, so a stale one would wipe the stopped exchange from the page.
        stopped = chat.textbox.stop(
            mark_stopped, [chat.chatbot], [chat.chatbot], queue=False, api_visibility="undocumented"
        )
        chat.textbox.stop(
            mark_stopped, [chat.chatbot], [chat.chatbot_state], queue=False, api_visibility="undocumented"
        )
        # The base column follows every way the chat handler starts; its handler only relays, so no concurrency
        # limit (the model work is counted in the chat handler's).
        base_shown = gr.on(
            [chat.textbox.submit, chat.chatbot.example_select, chat.chatbot.retry],
            show_base,
            [base_chat, compare],
            [base_chat],
            api_visibility="undocumented",
            concurrency_limit=None,
            show_progress="hidden",
        )
        chat.chatbot.clear(lambda: [], None, [base_chat], queue=False, api_visibility="undocumented")

        def set_compare(on: bool, request: gr.Request) -> tuple[Any, Any]:
            # While loading only a ?compare=1 link can tick it: kept, and unticked by refresh() if unavailable.
            on = bool(on) and (engine.can_compare or (engine.loaded is None and engine.error is None))
            relay.set_compare(getattr(request, "session_hash", None), on)
            return gr.Column(visible=on), gr.Chatbot(show_label=on)

        compare.change(set_compare, [compare], [base_column, chat.chatbot], queue=False, api_visibility="undocumented")
        export_inputs = [chat.chatbot, base_chat, *sliders]
        for settled in (chat.chatbot_value.change, base_shown.then, stopped.then, chat.chatbot.clear):
            settled(
                export_files,
                export_inputs,
                [export_md, export_json],
                queue=False,
                api_visibility="undocumented",
                show_progress="hidden",
            )
        gr.api(ask, api_name="ask")
        gr.Markdown(
            f"Model: [Medical-Diagnosis-COT-Gemma3-270M]({CARD_URL}) (also published as "
            "`alpha-ai/Medical-Diagnosis-COT-Gemma3-270M`), a LoRA fine-tune of Gemma 3 270M. "
            "Gemma is provided under Google's Gemma terms of use. API and MCP: see *Use via API* below."
        )

        timer = gr.Timer(1.0, active=not engine.wait_until_loaded(0))

        def refresh() -> tuple[str, gr.Timer, gr.Checkbox, str]:
            state, text = compare_controls(engine)
            return (
                model_status_markdown(engine),
                gr.Timer(active=not engine.wait_until_loaded(0)),
                gr.Checkbox(**state),
                text,
            )

        timer.tick(refresh, outputs=[status, timer, compare, compare_note], queue=False, api_visibility="undocumented")
        demo.load(refresh, outputs=[status, timer, compare, compare_note], queue=False, api_visibility="undocumented")

        # Deep links (?q=…&run=1&compare=1): pre-fill, then ask once the model is ready.
        # A hidden checkbox, not a gr.State: the browser-side script reads it, and State values stay on the server.
        autorun = gr.Checkbox(False, visible=False, elem_id="autorun")

        def open_link(request: gr.Request) -> tuple[Any, Any, bool]:
            question, run, want_compare, warning = deep_link(dict(getattr(request, "query_params", {}) or {}))
            if warning:
                gr.Warning(warning)
            if engine.ready:
                want_compare = want_compare and engine.can_compare
            return (
                gr.Textbox(value=question) if question else gr.skip(),
                gr.Checkbox(value=True) if want_compare else gr.skip(),
                bool(question and run),
            )

        async def wait_for_model(run: bool) -> bool:
            if not run:
                return False
            await anyio.to_thread.run_sync(engine.wait_until_loaded, RELAY_WAIT_S)
            return engine.ready

        demo.load(
            # Queued, not queue=False: only queued events show gr.Warning in the page.
            open_link,
            outputs=[chat.textbox, compare, autorun],
            api_visibility="undocumented",
            concurrency_limit=None,
        ).then(wait_for_model, [autorun], [autorun], api_visibility="undocumented", concurrency_limit=None).then(
            None, [autorun], None, js=AUTORUN_JS, api_visibility="undocumented"
        )

        def forget(request: gr.Request) -> None:
            relay.forget(getattr(request, "session_hash", None))

        demo.unload(forget)
    return demo


def _message(exc: Exception) -> str:
    return str(exc.message) if isinstance(exc, gr.Error) else str(exc)


def _as_gr_error(exc: Exception) -> gr.Error:
    return exc if isinstance(exc, gr.Error) else gr.Error(str(exc), print_exception=False)


def _as_dict(message: Any) -> dict[str, Any]:
    """A ChatMessage (or message dict) as a plain message dict."""
    if isinstance(message, dict):
        return message
    return {"role": message.role, "content": message.content, "metadata": dict(message.metadata or {})}


def launch_kwargs() -> dict[str, Any]:
    """Arguments for demo.launch(): theme and CSS go here in Gradio 6; MCP on; server name/port from GRADIO_*."""
    return {
        "theme": gr.themes.Soft(primary_hue="teal", secondary_hue="amber"),
        "css": CSS,
        "mcp_server": True,
        "show_error": True,
        "footer_links": ["api", "settings"],
    }


def queue(demo: gr.Blocks, engine: Engine) -> gr.Blocks:
    """A bounded queue: a few generations at once, the rest wait; past ``queue_size`` a clear refusal."""
    demo = demo.queue(default_concurrency_limit=engine.settings.concurrency, max_size=engine.settings.queue_size)
    # Gradio's queue looks for new events every 1 ms while idle, which took 6% of a core from a 2-core CPU's
    # decoding; every 10 ms costs a request at most 10 ms and measured 2%. No public setting exists (Gradio 6.31).
    if hasattr(demo._queue, "sleep_when_free"):
        demo._queue.sleep_when_free = QUEUE_POLL_S
    return demo
