"""The Gradio app over a tiny real model, driven through gradio_client and MCP."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import gradio as gr
import pytest
from gradio_client import Client
from serving import free_port
from tiny import ADAPTER_ANSWER, ADAPTER_REASONING, BASE_OUTPUT, QUESTIONS

from medcot.config import GenerationParams, Settings
from medcot.engine import Engine
from medcot.events import (
    CUT_OFF_NOTICE,
    STATS_PREFIX,
    AnswerDelta,
    Finished,
    ReasoningDelta,
    ReasoningDone,
    Stats,
    format_stats,
)
from medcot.ui.compare import BaseRelay, compare_controls
from medcot.ui.history import conversation_from, exchanges_from_history
from medcot.ui.layout import EXAMPLES, build_demo, launch_kwargs, queue
from medcot.ui.links import deep_link
from medcot.ui.rendering import (
    BASE_LABEL,
    WAITING_FOR_ADAPTER,
    ChatRenderer,
    mark_stopped,
    params_from,
    turns_from_history,
)

GREEDY = (64, 0.0, 0.95, 64, 1.0)  # max_new_tokens, temperature, top_p, top_k, repetition_penalty


def generation_threads() -> int:
    return sum(t.name == "medcot-generate" for t in threading.enumerate())


@pytest.fixture(scope="module")
def app_url(engine: Engine) -> Iterator[str]:
    demo = queue(build_demo(engine), engine)
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, server_port=free_port(), **launch_kwargs())
    yield url
    demo.close()


@pytest.fixture(scope="module")
def client(app_url: str) -> Client:
    return Client(app_url, verbose=False)


def test_chat_streams_pending_reasoning_then_done_and_a_separate_answer(client: Client) -> None:
    updates = list(client.submit(QUESTIONS[0], *GREEDY, api_name="/chat"))
    pending = [u for u in updates if u and u[0]["metadata"].get("status") == "pending"]
    assert pending, "the reasoning accordion is never shown as pending while streaming"
    # Reasoning text grows while still pending: it streams live, not all at the end.
    assert any(u[0]["content"] for u in pending)
    final = updates[-1]
    reasoning, answer, stats = final
    assert reasoning["metadata"]["title"] == "Reasoning"
    assert reasoning["metadata"]["status"] == "done"
    assert reasoning["metadata"]["duration"] >= 0
    assert reasoning["content"] == ADAPTER_REASONING
    assert answer["content"] == ADAPTER_ANSWER and not answer["metadata"]
    assert stats["content"].startswith(STATS_PREFIX)
    for update in updates:
        for message in update:
            assert "<think>" not in message["content"] and "</think>" not in message["content"]


def test_ask_returns_the_answer_only_unless_reasoning_is_requested(client: Client) -> None:
    assert client.predict(QUESTIONS[1], 64, 0.0, api_name="/ask") == ADAPTER_ANSWER
    with_reasoning = client.predict(QUESTIONS[1], 64, 0.0, 0.95, 64, 1.0, True, api_name="/ask")
    assert with_reasoning == f"Reasoning:\n{ADAPTER_REASONING}\n\nAnswer:\n{ADAPTER_ANSWER}"


def test_ask_rejects_bad_input_with_a_readable_message_and_keeps_serving(client: Client) -> None:
    with pytest.raises(Exception, match="Please type a question"):
        client.predict("   ", api_name="/ask")
    with pytest.raises(Exception, match="temperature must be between"):
        client.predict(QUESTIONS[1], 64, 5.0, api_name="/ask")
    assert client.predict(QUESTIONS[1], 64, 0.0, api_name="/ask") == ADAPTER_ANSWER


def test_history_reasoning_never_reaches_the_prompt(engine: Engine) -> None:
    history = [
        {"role": "user", "content": QUESTIONS[0]},
        {"role": "assistant", "content": "SECRET-REASONING", "metadata": {"title": "Reasoning", "status": "done"}},
        {"role": "assistant", "content": [{"type": "text", "text": "Earlier answer."}]},
        {"role": "assistant", "content": f"{STATS_PREFIX} 1 tok/s</sub>"},
        {"role": "user", "content": "question that failed"},
    ]
    turns = turns_from_history(history)
    assert [(t.question, t.answer) for t in turns] == [(QUESTIONS[0], "Earlier answer.")]
    from medcot.prompt import encode_prompt

    text = encode_prompt(engine.loaded.tokenizer, QUESTIONS[1], turns).text
    assert "Earlier answer." in text and "SECRET-REASONING" not in text and STATS_PREFIX not in text


def test_cancel_from_a_client_ends_the_generation_thread(tiny_settings: Settings, tmp_path: Path) -> None:
    from dataclasses import replace

    import tiny

    # An untrained model told never to stop keeps generating until cancelled.
    tokenizer = tiny.build_tokenizer()
    model = tiny.build_model(tokenizer, seed=1)
    model.generation_config.suppress_tokens = [
        tokenizer.eos_token_id,
        tokenizer.convert_tokens_to_ids("<end_of_turn>"),
    ]
    model.save_pretrained(tmp_path / "endless")
    tokenizer.save_pretrained(tmp_path / "endless")
    endless = Engine(replace(tiny_settings, base_model=str(tmp_path / "endless"), adapter=None)).load()
    demo = queue(build_demo(endless), endless)
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, server_port=free_port())
    try:
        baseline = generation_threads()
        job = Client(url, verbose=False).submit(QUESTIONS[0], 4096, 0.0, 0.95, 64, 1.0, api_name="/chat")
        deadline = time.monotonic() + 20
        while generation_threads() == baseline and time.monotonic() < deadline:
            time.sleep(0.02)
        assert generation_threads() == baseline + 1, "generation never started"
        time.sleep(0.3)
        job.cancel()
        cancelled = time.monotonic()
        while generation_threads() > baseline and time.monotonic() - cancelled < 5:
            time.sleep(0.01)
        assert generation_threads() == baseline, "the generation thread outlived the cancel"
    finally:
        demo.close()


def test_mcp_ask_tool_answers(app_url: str) -> None:
    from mcp import ClientSession
    from mcp.client.streamable_http import streamablehttp_client

    async def call() -> tuple[list[str], str]:
        async with (
            streamablehttp_client(f"{app_url.rstrip('/')}/gradio_api/mcp/") as (read, write, _),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            tools = await session.list_tools()
            names = [tool.name for tool in tools.tools]
            ask = next(name for name in names if name.endswith("ask"))
            description = next(tool.description for tool in tools.tools if tool.name == ask)
            assert "not for clinical use" in description.lower()
            result = await session.call_tool(ask, {"question": QUESTIONS[2], "temperature": 0})
            return names, "".join(part.text for part in result.content if hasattr(part, "text"))

    names, text = asyncio.run(asyncio.wait_for(call(), timeout=60))
    assert any(name.endswith("ask") for name in names)
    assert ADAPTER_ANSWER in text


# -- pure helpers ----------------------------------------------------------------------------------------------------


def test_first_text_is_sent_at_once_and_later_deltas_are_coalesced(engine: Engine) -> None:
    """Time to first token: the first delta is not held back for the update interval; the ones after it are."""
    release = threading.Event()

    def stream(message: str, turns: Any, params: Any, adapter: bool, cancel: threading.Event) -> Iterator[Any]:
        yield ReasoningDelta("Fluid")
        yield ReasoningDelta(" overload")  # arrives within the interval: coalesced with what follows
        release.wait(5)
        yield ReasoningDone(1.0)
        yield AnswerDelta("Diuretic.")  # coalesced too, and sent when the stream ends

    demo = build_demo(engine, stream=stream)

    async def run() -> tuple[list[str], list[str]]:
        updates = handler(demo, "respond")(QUESTIONS[0], [], *GREEDY, None)
        await anext(updates)  # the empty reply
        first = await asyncio.wait_for(anext(updates), 2)  # must come while the stream is blocked
        release.set()
        rest = await drain(updates)
        return [m.content for m in first[0]], [m.content for m in rest[-1][0]]

    first, final = asyncio.run(run())
    assert first == ["Fluid"]
    assert final[:2] == ["Fluid overload", "Diuretic."]


def test_held_text_goes_out_when_the_stream_stalls(engine: Engine) -> None:
    """Text coalesced into the next update is sent after the update interval even if no further event comes."""
    release = threading.Event()

    def stream(message: str, turns: Any, params: Any, adapter: bool, cancel: threading.Event) -> Iterator[Any]:
        yield ReasoningDelta("Fluid")
        yield ReasoningDelta(" overload")  # held: it comes within the interval of the first
        release.wait(10)  # a stalled stream (a slow token)
        yield Finished(Stats(10, 2, 2, 0, 0.1, 0.2, False, False, False, 0))

    demo = build_demo(engine, stream=stream)

    async def run() -> list[str]:
        updates = handler(demo, "respond")(QUESTIONS[0], [], *GREEDY, None)
        await anext(updates)  # the empty reply
        await anext(updates)  # the first text, at once
        held = await asyncio.wait_for(anext(updates), 2)  # while the stream is still stalled
        release.set()
        await drain(updates)
        return [m.content for m in held[0]]

    assert asyncio.run(run())[:1] == ["Fluid overload"]


def test_generation_starts_while_the_empty_reply_goes_out(engine: Engine) -> None:
    """Time to first token: the stream is started when the empty reply is yielded, not when Gradio asks for more."""
    started = threading.Event()

    def stream(message: str, turns: Any, params: Any, adapter: bool, cancel: threading.Event) -> Iterator[Any]:
        started.set()
        yield AnswerDelta("Diuretic.")

    demo = build_demo(engine, stream=stream)

    async def run() -> tuple[bool, list[Any]]:
        updates = handler(demo, "respond")(QUESTIONS[0], [], *GREEDY, None)
        await anext(updates)  # the empty reply: a pending reasoning accordion
        began = await asyncio.to_thread(started.wait, 2)  # nothing asks for the next update meanwhile
        return began, await drain(updates)

    began, rest = asyncio.run(run())
    assert began, "the stream did not start until the next update was asked for"
    assert [m.content for m in rest[-1][0]] == ["Diuretic."]


def test_closing_the_reply_before_the_first_token_cancels_the_generation(engine: Engine) -> None:
    """A Stop or a closed tab right after the empty reply: the generation that already started is told to stop."""
    started, cancels = threading.Event(), []

    def stream(message: str, turns: Any, params: Any, adapter: bool, cancel: threading.Event) -> Iterator[Any]:
        cancels.append(cancel)
        started.set()
        cancel.wait(10)  # a long prefill that checks the cancel event
        yield AnswerDelta("too late")

    demo = build_demo(engine, stream=stream)

    async def run() -> float:
        updates = handler(demo, "respond")(QUESTIONS[0], [], *GREEDY, None)
        await anext(updates)
        assert await asyncio.to_thread(started.wait, 2), "the stream did not start with the empty reply"
        began = time.monotonic()
        await asyncio.wait_for(updates.aclose(), 5)
        return time.monotonic() - began

    seconds = asyncio.run(run())
    assert cancels and cancels[0].is_set()
    assert seconds < 2


def test_idle_queue_polls_every_10_ms(engine: Engine) -> None:
    """The idle queue's poll interval is a private attribute of Gradio's queue: fail loudly if it is renamed."""
    from medcot.ui.layout import QUEUE_POLL_S

    assert queue(build_demo(engine), engine)._queue.sleep_when_free == QUEUE_POLL_S == 0.01


def test_renderer_drops_the_placeholder_accordion_when_the_model_does_not_reason() -> None:
    view = ChatRenderer()
    assert view.messages()[0].metadata["status"] == "pending"  # spinner from the first moment
    view.apply(AnswerDelta("Plain answer."))
    assert [m.content for m in view.messages()] == ["Plain answer."]


def test_renderer_yields_fresh_messages_each_time() -> None:
    # Gradio streams diffs between yields: reusing message objects would send nothing.
    view = ChatRenderer()
    first = view.messages()
    view.apply(ReasoningDelta("step"))
    view.apply(ReasoningDone(1.24))
    second = view.messages()
    assert first[0].content == "" and first[0].metadata["status"] == "pending"
    assert second[0].content == "step" and second[0].metadata == {
        "title": "Reasoning",
        "status": "done",
        "duration": 1.2,
    }


def test_cut_off_reasoning_is_flagged_and_explained() -> None:
    view = ChatRenderer()
    view.apply(ReasoningDelta("long thought"))
    view.apply(ReasoningDone(3.0, cut_off=True))
    stats = Stats(10, 64, 64, 0, 0.1, 3.0, True, True, False, 0)
    view.apply(Finished(stats))
    reasoning, stats_message = view.messages()
    assert reasoning.metadata["log"] == "cut off"
    assert "Max new tokens" in stats_message.content and "cut off by the token limit" in stats_message.content
    assert "cut off" not in format_stats(Stats(10, 8, 4, 4, 0.1, 1.0, False, False, False, 0))


def test_mark_stopped_leaves_no_spinner() -> None:
    history = [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "half a thought", "metadata": {"title": "Reasoning", "status": "pending"}},
    ]
    settled = mark_stopped(history)
    assert settled[1]["metadata"] == {"title": "Reasoning", "status": "done", "log": "stopped"}
    assert history[1]["metadata"]["status"] == "pending"  # the input is not mutated


@pytest.mark.parametrize(
    ("history", "message"),
    [("not a list", "list of messages"), ([1, 2], "role and content"), ([{"content": "x"}], "role and content")],
)
def test_bad_history_is_refused_readably(history: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        turns_from_history(history)


def test_params_from_validates_and_fills_defaults() -> None:
    assert params_from(None, None, None, None, None) == GenerationParams()
    assert params_from(10, "0.5", 0.9, 5.0, 1.1) == GenerationParams(10, 0.5, 0.9, 5, 1.1)
    with pytest.raises(ValueError, match="max_new_tokens"):
        params_from(0, 1.0, 0.9, 5, 1.0)


def test_ui_module_is_the_only_gradio_user() -> None:
    import ast
    from pathlib import Path

    library = Path(__file__).parents[1] / "medcot"
    for path in library.rglob("*.py"):
        if path.parent.name == "ui" or path.name == "zerogpu.py":
            continue
        imported = {
            alias.name.split(".")[0]
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Import | ast.ImportFrom)
            for alias in (node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")])
        }
        assert not imported & {"gradio", "spaces"}, f"{path.name} imports the UI stack"


def test_demo_shows_the_disclaimer_and_status(engine: Engine) -> None:
    demo = build_demo(engine)
    markdown = [c.value for c in demo.blocks.values() if isinstance(c, gr.Markdown)]
    assert any("not for clinical use" in str(value) for value in markdown)
    assert any("adapter" in str(value) and "cpu" in str(value) for value in markdown)


def test_chat_api_keeps_its_parameters(client: Client) -> None:
    """The chat handler takes gr.Request for the comparison; API clients must not see a new parameter."""
    chat = client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/chat"]
    names = [parameter["parameter_name"] for parameter in chat["parameters"]]
    assert names == ["message", "max_new_tokens", "temperature", "top_p", "top_k", "repetition_penalty"]
    assert len(chat["returns"]) == 1


# -- deep links ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({}, (None, False, False, None)),
        ({"q": "What is edema?"}, ("What is edema?", False, False, None)),
        ({"q": "  What is edema?\x00 ", "run": "1"}, ("What is edema?", True, False, None)),
        ({"q": "What is edema?", "run": "yes", "compare": "true"}, ("What is edema?", True, True, None)),
        ({"q": "What is edema?", "run": "0", "compare": "no"}, ("What is edema?", False, False, None)),
        ({"run": "1", "compare": "1"}, (None, False, True, None)),  # nothing to run
        ({"q": "\x00\x01", "run": "1"}, (None, False, False, None)),
    ],
)
def test_deep_link(query: dict[str, str], expected: tuple[Any, ...]) -> None:
    assert deep_link(query) == expected


def test_deep_link_with_a_question_too_long_is_refused_with_a_warning() -> None:
    question, run, _, warning = deep_link({"q": "x" * 9000, "run": "1"})
    assert question is None and not run
    assert warning and "too long" in warning


# -- export from the chat view ---------------------------------------------------------------------------------------


def stats_message(stats: Stats) -> dict[str, Any]:
    return {"role": "assistant", "content": format_stats(stats), "metadata": None}


STATS = Stats(12, 48, 40, 8, 0.12, 1.0, False, False, False, 0)
CUT = Stats(12, 10, 10, 0, 0.12, 1.0, True, True, False, 0)
HISTORY = [
    {"role": "user", "content": "Q1"},
    {"role": "assistant", "content": "R1", "metadata": {"title": "Reasoning", "status": "done", "duration": 1.0}},
    {"role": "assistant", "content": [{"type": "text", "text": "A1"}], "metadata": None},
    stats_message(STATS),
    {"role": "user", "content": "Q2"},
    {"role": "assistant", "content": "half", "metadata": {"title": "Reasoning", "status": "done", "log": "cut off"}},
    stats_message(CUT),
    {"role": "user", "content": "Q3 failed"},
]
BASE_HISTORY = [
    {"role": "user", "content": "Q2"},
    {"role": "assistant", "content": "B2", "metadata": None},
    stats_message(STATS),
]


def test_exchanges_from_history() -> None:
    (q1, r1), (q2, r2), (q3, r3) = exchanges_from_history(HISTORY)
    assert (q1, r1.reasoning, r1.answer, r1.notes) == ("Q1", "R1", "A1", ())
    assert r1.stats == "first token 0.12 s · 53.4 tok/s · 48 tokens (40 reasoning · 8 answer)"
    assert (q2, r2.reasoning, r2.answer) == ("Q2", "half", "")
    assert "Reasoning cut off by the token limit (no closing tag)." in r2.notes and CUT_OFF_NOTICE not in r2.stats
    assert (q3, r3) == ("Q3 failed", None)
    assert exchanges_from_history("not a list") == [] and exchanges_from_history([1, {"role": "x"}]) == []


def test_conversation_pairs_base_answers_with_their_questions(engine: Engine) -> None:
    conversation = conversation_from(HISTORY, BASE_HISTORY, engine, GenerationParams(temperature=0.0))
    assert [e.question for e in conversation.exchanges] == ["Q1", "Q2", "Q3 failed"]
    assert [e.base_reply.answer if e.base_reply else None for e in conversation.exchanges] == [None, "B2", None]
    assert conversation.models["adapter"] == engine.loaded.adapter_id and conversation.models["merged"] is True
    assert conversation.generation["temperature"] == 0.0 and conversation.base_label == BASE_LABEL


# -- the base-model comparison ---------------------------------------------------------------------------------------


def test_compare_controls_follow_what_is_loaded(engine: Engine, tiny_settings: Settings) -> None:
    from dataclasses import replace

    assert compare_controls(engine)[0] == {"interactive": True}
    base_only = Engine(replace(tiny_settings, adapter=None), replace(engine.loaded, kind="base", base_delta=None))
    state, note = compare_controls(base_only)
    assert state == {"interactive": False, "value": False} and "MEDCOT_ADAPTER is empty" in note
    assert "once the model has loaded" in compare_controls(Engine(tiny_settings))[1]


def test_relay_hands_each_question_s_channel_to_its_column() -> None:
    async def scenario() -> list[Any]:
        relay = BaseRelay()
        seen: list[Any] = []
        # The column first, then the chat handler.
        waiting = asyncio.create_task(relay.take("s", timeout=5))
        await asyncio.sleep(0.1)
        channel = relay.open("s")
        channel.put_nowait("event")
        relay.close("s", channel)
        taken = await waiting
        seen += [await taken.get(), await taken.get()]
        # The chat handler done before its column started (a refused question): the column still gets it.
        early = relay.open("s")
        relay.close("s", early)
        seen.append(await relay.take("s", timeout=1) is early)
        # A channel no column took is not handed to a later question's column.
        stale = relay.open("s")
        relay.close("s", stale)
        relay._pending["s"][1][0] -= BaseRelay.CLOSED_GRACE_S + 1
        seen.append(await relay.take("s", timeout=0.2))
        # A column whose chat handler never ran gives way to the next question's column.
        orphan = asyncio.create_task(relay.take("s", timeout=5))
        await asyncio.sleep(0.1)
        current = asyncio.create_task(relay.take("s", timeout=5))
        await asyncio.sleep(0.1)
        fresh = relay.open("s")
        seen += [await orphan, await current is fresh]
        return seen

    assert asyncio.run(scenario()) == ["event", BaseRelay.END, True, None, None, True]


def content(message: Any) -> str:
    return message["content"] if isinstance(message, dict) else message.content


def handler(demo: gr.Blocks, name: str) -> Any:
    return next(fn.fn for fn in demo.fns.values() if fn.name == name)


async def drain(stream: Any) -> list[Any]:
    return [update async for update in stream]


def test_compare_relays_the_base_answer_to_its_column(unmerged_engine: Engine) -> None:
    """Without a browser: the chat handler and the base column's handler of one session, as a submit starts them."""
    demo = build_demo(unmerged_engine)
    request = SimpleNamespace(session_hash="session-1")
    handler(demo, "set_compare")(True, request)

    async def submit(question: str) -> tuple[list[Any], list[Any]]:
        column = asyncio.create_task(drain(handler(demo, "show_base")([], True, request)))
        chat = await drain(handler(demo, "respond")(question, [], *GREEDY, request))
        return chat, await column

    chat, column = asyncio.run(submit(QUESTIONS[0]))
    response, _ = chat[-1]  # ChatInterface's wrapper yields (the reply's messages, the whole history)
    assert [m.content for m in response][1] == ADAPTER_ANSWER
    final = [content(m) for m in column[-1]]
    assert final[:2] == [QUESTIONS[0], BASE_OUTPUT] and final[2].startswith(STATS_PREFIX) and len(final) == 3
    assert [content(m) for m in column[0]] == [QUESTIONS[0], WAITING_FOR_ADAPTER]

    # A refused question leaves the base column as it was.
    async def refused() -> list[Any]:
        shown = asyncio.create_task(drain(handler(demo, "show_base")(column[-1], True, request)))
        with pytest.raises(gr.Error, match="Please type a question"):
            await drain(handler(demo, "respond")("   ", [], *GREEDY, request))
        return await shown

    assert [type(update).__name__ for update in asyncio.run(refused())] == ["dict"]  # one gr.skip()


def test_base_column_sends_held_text_when_the_base_stream_stalls(unmerged_engine: Engine) -> None:
    release = threading.Event()

    def stream(message: str, turns: Any, params: Any, adapter: bool, cancel: threading.Event) -> Iterator[Any]:
        if adapter:
            yield AnswerDelta("Diuretic.")
            return
        yield AnswerDelta("Base")
        yield AnswerDelta(" answer")  # held: it comes within the interval of the first
        release.wait(10)  # a stalled stream (a slow token)

    demo = build_demo(unmerged_engine, stream=stream)
    request = SimpleNamespace(session_hash="session-2")
    handler(demo, "set_compare")(True, request)

    async def run() -> list[str]:
        column = handler(demo, "show_base")([], True, request)
        chat = asyncio.create_task(drain(handler(demo, "respond")(QUESTIONS[0], [], *GREEDY, request)))
        shown: list[str] = []
        while "Base answer" not in shown:  # the held text arrives while the base stream is still stalled
            shown = [content(m) for m in await asyncio.wait_for(anext(column), 2)]
        release.set()
        await chat
        await drain(column)
        return shown

    assert asyncio.run(run())[:2] == [QUESTIONS[0], "Base answer"]


def test_base_column_does_nothing_when_compare_is_off(unmerged_engine: Engine) -> None:
    demo = build_demo(unmerged_engine)
    updates = asyncio.run(drain(handler(demo, "show_base")([], False, SimpleNamespace(session_hash="s"))))
    assert len(updates) == 1 and updates[0] == gr.skip()


def test_readme_links_and_snippets_match_the_app() -> None:
    """The README's deep links use the parameters the page reads and ask real questions; its web-component script
    is the Gradio version the Space runs."""
    import re
    from urllib.parse import parse_qs, urlsplit

    from medcot.ui.links import QUERY_COMPARE, QUERY_QUESTION, QUERY_RUN

    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    links = re.findall(r"https://[^\s)\"']+\?q=[^\s)\"']+", readme)
    assert len(links) >= 4
    for url in links:
        query = {key: values[0] for key, values in parse_qs(urlsplit(url).query).items()}
        assert set(query) <= {QUERY_QUESTION, QUERY_RUN, QUERY_COMPARE}, url
        question, run, _, warning = deep_link(query)
        assert question and warning is None and run == (QUERY_RUN in query), url
    assert any(deep_link({"q": parse_qs(urlsplit(u).query)["q"][0]})[0] in EXAMPLES for u in links)
    scripts = re.findall(r"gradio\.s3-us-west-2\.amazonaws\.com/([\d.]+)/gradio\.js", readme)
    assert scripts and set(scripts) == {gr.__version__}
    assert "open-in-hf-spaces-md.svg" in readme
