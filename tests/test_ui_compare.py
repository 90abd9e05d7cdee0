"""medcot.ui.compare: the compare controls and the relay that carries the base model's answer to its column."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

from medcot.config import Settings
from medcot.engine import Engine
from medcot.ui.compare import BaseRelay, compare_controls


def test_compare_controls_follow_what_is_loaded(engine: Engine, tiny_settings: Settings) -> None:

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
