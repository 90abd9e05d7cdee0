"""The GPU seconds asked per answer: the prior until an answer is measured, then the measured speed with its margin."""

from __future__ import annotations

import math

from medcot import gpu_budget
from medcot.events import Stats


def stats(new_tokens: int, seconds: float, ttft: float = 0.1, at_first_text: int = 1) -> Stats:
    return Stats(
        prompt_tokens=100,
        new_tokens=new_tokens,
        reasoning_tokens=new_tokens // 2,
        answer_tokens=new_tokens - new_tokens // 2,
        time_to_first_token=ttft,
        seconds=seconds,
        hit_token_limit=False,
        reasoning_cut_off=False,
        stopped=False,
        turns_dropped=0,
        tokens_at_first_text=at_first_text,
    )


def test_until_an_answer_is_measured_the_prior_is_asked() -> None:
    budget = gpu_budget.GpuBudget()
    assert budget.seconds_for(512) == 36 == math.ceil(gpu_budget.PRIOR_STARTUP_S + 512 * 0.04)
    budget.observe_answer(stats(101, 2.1))  # a speed, but no worker start-up yet: still the prior
    assert not budget.figures().measured and budget.seconds_for(512) == 36


def test_a_measured_answer_sets_the_ask_with_the_margin() -> None:
    budget = gpu_budget.GpuBudget()
    budget.observe_startup(2.0)
    budget.observe_answer(stats(new_tokens=101, seconds=2.1, ttft=0.1))  # 100 tokens in 2.0 s: 0.02 s a token
    figures = budget.figures()
    assert figures.measured and figures.answers == 1
    assert math.isclose(figures.seconds_per_token, 0.02) and figures.startup_s == 2.0 and figures.first_token_s == 0.1
    expected = math.ceil(gpu_budget.MARGIN * (2.0 + 0.1 + 512 * 0.02))  # 1.5 × 12.34 = 18.51 → 19
    assert budget.seconds_for(512) == expected == 19 < 36  # the old formula asked 35 s for 512 tokens


def test_the_ask_is_clamped() -> None:
    budget = gpu_budget.GpuBudget()
    budget.observe_startup(0.1)
    budget.observe_answer(stats(101, 0.2))  # 1 ms a token
    assert budget.seconds_for(8) == gpu_budget.MIN_SECONDS
    budget.observe_answer(stats(101, 20.1))  # 0.2 s a token
    assert budget.seconds_for(4096) == gpu_budget.MAX_SECONDS


def test_a_high_percentile_of_recent_answers_is_used_and_old_ones_are_forgotten() -> None:
    budget = gpu_budget.GpuBudget()
    budget.observe_startup(1.0)
    for _ in range(8):
        budget.observe_answer(stats(101, 1.1))  # 0.01 s a token
    budget.observe_answer(stats(101, 3.1))  # one slow answer: 0.03
    assert math.isclose(budget.figures().seconds_per_token, 0.03)  # under 10 answers the 90th percentile is the top
    for _ in range(20):
        budget.observe_answer(stats(101, 1.1))
    assert math.isclose(budget.figures().seconds_per_token, 0.01)  # one slow answer in 30: above the 90th
    for _ in range(gpu_budget.WINDOW):
        budget.observe_answer(stats(101, 2.1))
    assert math.isclose(budget.figures().seconds_per_token, 0.02)


def test_short_answers_do_not_count_for_the_speed() -> None:
    budget = gpu_budget.GpuBudget()
    budget.observe_startup(1.0)
    budget.observe_answer(stats(new_tokens=3, seconds=5.0))
    assert not budget.figures().measured


def test_a_cut_answer_raises_every_ask_until_it_is_forgotten() -> None:
    budget = gpu_budget.GpuBudget()
    budget.observe_startup(1.0)
    for _ in range(20):
        budget.observe_answer(stats(101, 1.1))  # 0.01 s a token
    asked = budget.seconds_for(512)
    budget.observe_cut(held_s=asked, max_new_tokens=512)
    assert budget.figures().seconds_per_token == asked / 512  # not passed over by the percentile
    again = budget.seconds_for(512)
    assert again > asked and again >= gpu_budget.MARGIN * asked * 0.9
    for _ in range(gpu_budget.WINDOW):
        budget.observe_answer(stats(101, 1.1))
    assert budget.seconds_for(512) == asked
