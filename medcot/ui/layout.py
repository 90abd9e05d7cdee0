"""The page: its layout, its events wired to ChatHandlers and PageHandlers, and the launch and queue settings."""

from __future__ import annotations

import warnings
from typing import Any

import gradio as gr

from medcot import DISCLAIMER
from medcot.engine import Engine
from medcot.prompt_styles import BASE_DECODING
from medcot.request import StreamFn
from medcot.ui.chat_handlers import ChatHandlers
from medcot.ui.compare import COMPARE_LABEL, compare_controls
from medcot.ui.feedback import FEEDBACK_NOTE, FeedbackHandlers, FeedbackLog
from medcot.ui.gradio_internals import chat_submits, set_idle_poll
from medcot.ui.links import AUTORUN_JS
from medcot.ui.page_handlers import PageHandlers, model_status_markdown
from medcot.ui.rendering import ADAPTER_LABEL, BASE_LABEL, footer_markdown
from medcot.ui.unset_slider import UnsetSlider

TITLE = "MedCoT · Medical chain-of-thought demo"
# The model card's two questions first, then two in the same style.
EXAMPLES = [
    "A 65-year-old with exertional dyspnea and orthopnea presents with bilateral pitting edema and raised JVP. "
    "What initial pharmacologic therapy is indicated?",
    "Elderly patient with new ankle swelling on thiazolidinedione—likely cause?",
    "A 24-year-old has fever, neck stiffness and a petechial rash. What is the most urgent next step?",
    "Which electrolyte abnormality is most typical of refeeding syndrome?",
]
SHOW_REASONING_LABEL = "Show reasoning"
QUEUE_POLL_S = 0.01
# The page takes no files; Gradio's upload route is open to anyone all the same (a 200 MB file was kept on disk).
MAX_UPLOAD = "1mb"
CHAT_API_DESCRIPTION = (
    "Chat; streams the message list (reasoning, answer, stats). Not for clinical use. Sampling values left unset take "
    "the loaded model's own defaults, as the page's sliders do: the model card's for the fine-tune; the base alone, "
    f"shown worked examples, decodes at temperature {BASE_DECODING.temperature:g}, repetition penalty "
    f"{BASE_DECODING.repetition_penalty:g}."
)
# Gradio warns that /chat, an MCP tool too, takes its history from a gr.State MCP cannot carry: each MCP call is a
# new conversation, as it should be (/ask is their tool), and Gradio 6.31 cannot keep one endpoint out of MCP.
warnings.filterwarnings(
    "ignore",
    message="This MCP server includes a tool that has a gr.State input",
    category=UserWarning,
    module="gradio",
)
# The page's own events: answered at once, and no API endpoint a client should call.
QUIET: dict[str, Any] = {"queue": False, "api_visibility": "undocumented"}
# The page's queued events that only relay or wait: no concurrency limit (the chat handler's counts the model work).
WAITING: dict[str, Any] = {"api_visibility": "undocumented", "concurrency_limit": None}
CSS = """
#disclaimer { border-left: 4px solid #d97706; padding: 0.4rem 0.8rem; background: rgba(217, 119, 6, 0.08); }
#model-status { font-size: 0.85rem; opacity: 0.85; }
#compare-note, #export-row { font-size: 0.85rem; opacity: 0.85; }
"""


def _chatbot(elem_id: str, label: str, placeholder: str, show_label: bool, feedback: bool = False) -> gr.Chatbot:
    """A chat column (the fine-tuned one shows its label only beside the base one); ``feedback``: 👍 / 👎 buttons."""
    return gr.Chatbot(
        feedback_options=("Like", "Dislike") if feedback else None,
        elem_id=elem_id,
        label=label,
        show_label=show_label,
        placeholder=placeholder,
        buttons=["copy", "copy_all"],
        watermark=DISCLAIMER,  # appended to whatever the copy buttons copy
        scale=1,
    )


def build_demo(engine: Engine, stream: StreamFn | None = None, feedback: FeedbackLog | None = None) -> gr.Blocks:
    """The whole app for one engine. ``stream`` answers (app.py passes the ZeroGPU-wrapped one; engine.stream when
    left out); ``feedback``: where ratings go, else the settings' (MEDCOT_FEEDBACK_*), else none."""
    feedback = feedback or FeedbackLog.from_settings(engine.settings)
    handlers = ChatHandlers(engine, stream or engine.stream)
    page = PageHandlers(engine, handlers.answers)
    with gr.Blocks(title=TITLE, fill_height=True, delete_cache=(3600, 3600)) as demo:
        gr.Markdown(f"# 🩺 {TITLE}")
        gr.Markdown(f"⚠️ **{DISCLAIMER}**", elem_id="disclaimer")
        status = gr.Markdown(model_status_markdown(engine), elem_id="model-status")
        checkbox_state, note = compare_controls(engine)
        with gr.Row(equal_height=False):  # the checkboxes as tall as their label, not as the note
            compare = gr.Checkbox(
                **{"value": False, **checkbox_state},
                label=COMPARE_LABEL,
                elem_id="compare",
                scale=0,
                min_width=260,
            )
            show_reasoning = gr.Checkbox(
                True, label=SHOW_REASONING_LABEL, elem_id="show-reasoning", scale=0, min_width=180
            )
            compare_note = gr.Markdown(note, elem_id="compare-note")
        # Remembered in this browser (the card advises hiding the reasoning from end users); the export keeps it.
        reasoning_choice = gr.BrowserState("shown", storage_key="medcot-show-reasoning")
        # Unset in the page's config (API clients get the loaded model's defaults); filled in by PageHandlers.
        sliders = [
            UnsetSlider(1, 4096, step=1, label="Max new tokens", render=False),
            UnsetSlider(0.0, 2.0, step=0.05, label="Temperature (0 = greedy)", render=False),
            UnsetSlider(0.01, 1.0, step=0.01, label="Top-p", render=False),
            UnsetSlider(0, 1000, step=1, label="Top-k (0 = off)", render=False),
            UnsetSlider(1.0, 2.0, step=0.05, label="Repetition penalty", render=False),
        ]
        with gr.Row(equal_height=False):
            with gr.Column(scale=1):
                # Not save_history=True: Gradio 6.31 restores this Chatbot's messages only, without the base column
                # or the answer records the export and feedback read; and its side panel squeezes the comparison.
                chat = gr.ChatInterface(
                    handlers.respond,
                    chatbot=_chatbot(
                        "chat",
                        ADAPTER_LABEL,
                        "Ask a medical question. The model reasons step by step before it answers.",
                        show_label=False,
                        feedback=feedback is not None,
                    ),
                    # A custom Textbox's own stop_btn (default False) decides whether Stop is shown.
                    textbox=gr.Textbox(
                        placeholder="Ask a medical question…",
                        elem_id="question",
                        label="Your question",
                        show_label=False,
                        submit_btn=True,
                        stop_btn=True,
                    ),
                    additional_inputs=sliders,
                    # render=False: ChatInterface renders its own copy; else an empty duplicate shows above the chat.
                    additional_inputs_accordion=gr.Accordion("Generation settings", open=False, render=False),
                    examples=[[question] for question in EXAMPLES],
                    run_examples_on_click=True,
                    api_name="chat",
                    api_description=CHAT_API_DESCRIPTION,
                    fill_height=True,
                )
            with gr.Column(scale=1, visible=False) as base_column:
                base_chat = _chatbot(
                    "base-chat", BASE_LABEL, "The base model's answers (adapter off) appear here.", show_label=True
                )
        with gr.Row(elem_id="export-row"):
            gr.Markdown("Download the conversation (reasoning marked as such, with the models and settings):")
            exports = [
                gr.DownloadButton(label, interactive=False, size="sm", elem_id=elem_id, scale=0, min_width=140)
                for label, elem_id in (("Markdown", "export-md"), ("JSON", "export-json"))
            ]

        # A refused or failed chat request (shown as an error toast) stops ChatInterface's chain before it re-enables
        # the textbox; this puts the page back, whether the question was typed, an example or Retry.
        restored = [chat.chatbot, chat.chatbot_state, chat.textbox]
        for submit in chat_submits(demo, chat):
            submit.failure(handlers.restore_after_failure, [chat.chatbot, chat.saved_input], restored, **QUIET)
        # Stop settles the accordion it left pending. The state too: Gradio syncs it only after a completed stream,
        # and a stale one would wipe the stopped exchange with the next reply.
        for stopped in (chat.chatbot, chat.chatbot_state):
            chat.textbox.stop(handlers.stop, [chat.chatbot], [stopped], **QUIET)
        # The base column follows every way the chat starts.
        chat_starts = [chat.textbox.submit, chat.chatbot.example_select, chat.chatbot.retry]
        base_inputs = [base_chat, compare]
        gr.on(chat_starts, handlers.base.show_base, base_inputs, [base_chat], **WAITING, show_progress="hidden")
        chat.chatbot.clear(lambda: [], None, [base_chat], **QUIET)
        demo.load(handlers.recall_show_reasoning, [reasoning_choice], [show_reasoning], **QUIET)
        show_reasoning.change(handlers.set_show_reasoning, [show_reasoning], [reasoning_choice], **QUIET)
        compare.change(handlers.set_compare, [compare], [base_column, chat.chatbot], **QUIET)
        # The downloads follow what both chats show (only the newest run is written): a click gets every answer shown.
        export_inputs = [chat.chatbot, base_chat, *sliders]
        for shown in (chat.chatbot, base_chat):
            shown.change(
                page.export_files, export_inputs, exports, **QUIET, show_progress="hidden", trigger_mode="always_last"
            )
        if feedback is not None:
            _feedback_controls(chat.chatbot, FeedbackHandlers(engine, handlers.answers, feedback))
        gr.api(handlers.ask, api_name="ask")
        footer = gr.Markdown(footer_markdown(engine), elem_id="footer")

        timer = gr.Timer(1.0, active=not engine.wait_until_loaded(0))
        refreshed = [status, timer, compare, compare_note, *sliders, footer]
        timer.tick(page.refresh, outputs=refreshed, **QUIET)
        demo.load(page.open_page, outputs=refreshed, **QUIET)

        # Deep links (?q=…&run=1&compare=1): pre-fill, then ask once the model is ready. A hidden checkbox, not a
        # gr.State: the browser-side script reads it, and State values stay on the server.
        autorun = gr.Checkbox(False, visible=False, elem_id="autorun")
        # Queued, not queue=False: only queued events show gr.Warning in the page.
        opened = demo.load(page.open_link, outputs=[chat.textbox, compare, autorun], **WAITING)
        waited = opened.then(page.wait_for_model, [autorun], [autorun], **WAITING)
        waited.then(None, [autorun], None, js=AUTORUN_JS, api_visibility="undocumented")

        demo.unload(handlers.forget)
    return demo


def _feedback_controls(chatbot: gr.Chatbot, rater: FeedbackHandlers) -> None:
    """What feedback keeps, said in the page; a rating writes its record, then an optional comment can follow."""
    gr.Markdown(FEEDBACK_NOTE, elem_id="feedback-note")
    rated = gr.State(None)  # the feedback id the comment goes with
    comment = gr.Textbox(
        label="Comment on your rating (optional)", visible=False, elem_id="feedback-comment", submit_btn="Send"
    )
    chatbot.like(rater.rate, [chatbot], [rated, comment], **QUIET)
    comment.submit(rater.comment, [rated, comment], [rated, comment], **QUIET)


def launch_kwargs() -> dict[str, Any]:
    """Arguments for demo.launch(): theme and CSS go here in Gradio 6; MCP on; server name/port from GRADIO_*."""
    return {
        "theme": gr.themes.Soft(primary_hue="teal", secondary_hue="amber"),
        "css": CSS,
        "mcp_server": True,
        "show_error": True,
        "footer_links": ["api", "settings"],
        "max_file_size": MAX_UPLOAD,
    }


def queue(demo: gr.Blocks, engine: Engine) -> gr.Blocks:
    """A bounded queue: a few generations at once, the rest wait; past ``queue_size`` a clear refusal."""
    demo = demo.queue(default_concurrency_limit=engine.settings.concurrency, max_size=engine.settings.queue_size)
    # Gradio polls every 1 ms while idle (6% of a core on 2 cores); 10 ms costs 2% (docs/benchmark.md, Idle CPU).
    set_idle_poll(demo, QUEUE_POLL_S)
    return demo
