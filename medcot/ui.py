"""The Gradio app: a chat with a live reasoning accordion, an `/ask` API/MCP tool, and the model's status."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import gradio as gr

from medcot import DISCLAIMER
from medcot.config import GenerationParams
from medcot.engine import Engine, Finished, InputError, Stats, StreamEvent
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
# Streamed UI updates are coalesced to this interval: each update re-sends a diff of the whole reply, so one per
# token floods the browser (and the server's event loop) when the model is fast.
UPDATE_INTERVAL_S = 0.05
STATS_PREFIX = "<sub>⏱"  # marks the stats line, which is shown under an answer but never fed back to the model
USER_ERRORS = (InputError, PromptTooLongError, ModelLoadError, GenerationError, ValueError)
CSS = """
#disclaimer { border-left: 4px solid #d97706; padding: 0.4rem 0.8rem; background: rgba(217, 119, 6, 0.08); }
#model-status { font-size: 0.85rem; opacity: 0.85; }
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
        line += (
            "\n\n**The reasoning was cut off by the token limit** before an answer. "
            "Raise *Max new tokens* in Generation settings and ask again."
        )
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


def mark_stopped(history: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """After Stop: no accordion keeps spinning; the last one says it was stopped."""
    history = list(history or [])
    for i, message in enumerate(history):
        metadata = message.get("metadata") or {}
        if metadata.get("status") == "pending":
            history[i] = {**message, "metadata": {**metadata, "status": "done", "log": "stopped"}}
    return history


def model_status_markdown(engine: Engine) -> str:
    if engine.ready:
        return f"**Model:** {engine.status()}"
    if engine.error:
        return f"**The model is not available.** {engine.error}"
    return f"**Loading the model:** {engine.status()}"


def build_demo(engine: Engine, stream: StreamFn | None = None) -> gr.Blocks:
    """The whole app for one engine. ``stream`` defaults to engine.stream (the ZeroGPU-wrapped one on a Space)."""
    stream = stream or gpu_stream(engine)
    defaults = engine.settings.generation_defaults

    async def respond(
        message: str,
        history: list[dict[str, Any]],
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        top_k: int,
        repetition_penalty: float,
    ) -> AsyncIterator[list[gr.ChatMessage]]:
        cancel = threading.Event()
        try:
            params = params_from(max_new_tokens, temperature, top_p, top_k, repetition_penalty)
            turns = turns_from_history(history)
            view = ChatRenderer()
            yield view.messages()
            last = time.monotonic()
            async for event in iterate_in_thread(stream(message, turns, params, True, cancel), cancel):
                view.apply(event)
                now = time.monotonic()
                if now - last >= UPDATE_INTERVAL_S or not isinstance(event, ReasoningDelta | AnswerDelta):
                    last = now
                    yield view.messages()
        except USER_ERRORS as exc:
            raise gr.Error(str(exc), print_exception=False) from None
        except Exception as exc:
            log.exception("generation failed")
            raise gr.Error(f"Something went wrong while answering ({type(exc).__name__}). Please try again.") from None

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

    with gr.Blocks(title=TITLE, fill_height=True) as demo:
        gr.Markdown(f"# 🩺 {TITLE}")
        gr.Markdown(f"⚠️ **{DISCLAIMER}**", elem_id="disclaimer")
        status = gr.Markdown(model_status_markdown(engine), elem_id="model-status")
        sliders = [
            gr.Slider(1, 4096, value=defaults.max_new_tokens, step=1, label="Max new tokens", render=False),
            gr.Slider(0.0, 2.0, value=defaults.temperature, step=0.05, label="Temperature (0 = greedy)", render=False),
            gr.Slider(0.01, 1.0, value=defaults.top_p, step=0.01, label="Top-p", render=False),
            gr.Slider(0, 1000, value=defaults.top_k, step=1, label="Top-k (0 = off)", render=False),
            gr.Slider(
                1.0, 2.0, value=defaults.repetition_penalty, step=0.05, label="Repetition penalty", render=False
            ),
        ]
        chat = gr.ChatInterface(
            respond,
            chatbot=gr.Chatbot(
                elem_id="chat",
                label="Conversation",
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
            # render=False: ChatInterface renders its own copy of this accordion under the chat; rendered here
            # too, an empty duplicate would appear above the chat.
            additional_inputs_accordion=gr.Accordion("Generation settings", open=False, render=False),
            examples=[[question] for question in EXAMPLES],
            run_examples_on_click=True,
            api_name="chat",
            api_description="Chat; streams the message list (reasoning, answer, stats). Not for clinical use.",
            fill_height=True,
        )
        # Stop cancels the stream; this settles the accordion it left pending. The chat's state is set from the
        # visible chat too: Gradio syncs it only after a stream that completes, and the next reply is drawn from
        # the state, so a stale one would wipe the stopped exchange from the page.
        chat.textbox.stop(mark_stopped, [chat.chatbot], [chat.chatbot], queue=False, api_visibility="undocumented")
        chat.textbox.stop(
            mark_stopped, [chat.chatbot], [chat.chatbot_state], queue=False, api_visibility="undocumented"
        )
        gr.api(ask, api_name="ask")
        gr.Markdown(
            f"Model: [Medical-Diagnosis-COT-Gemma3-270M]({CARD_URL}) (also published as "
            "`alpha-ai/Medical-Diagnosis-COT-Gemma3-270M`), a LoRA fine-tune of Gemma 3 270M. "
            "Gemma is provided under Google's Gemma terms of use. API and MCP: see *Use via API* below."
        )

        timer = gr.Timer(1.0, active=not engine.wait_until_loaded(0))

        def refresh() -> tuple[str, gr.Timer]:
            return model_status_markdown(engine), gr.Timer(active=not engine.wait_until_loaded(0))

        timer.tick(refresh, outputs=[status, timer], queue=False, api_visibility="undocumented")
        demo.load(refresh, outputs=[status, timer], queue=False, api_visibility="undocumented")
    return demo


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
    return demo.queue(default_concurrency_limit=engine.settings.concurrency, max_size=engine.settings.queue_size)
