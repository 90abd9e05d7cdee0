"""The stats line under an answer (Markdown), with its notice when the answer ended short.

Gradio-free: the benchmarks' clients (benchmarks/client.py) find it in the page's messages and read its figures."""

from __future__ import annotations

from medcot.events import Stats

STATS_PREFIX = "<sub>⏱"  # marks the stats line, which is shown under an answer but never fed back to the model
STATS_END = "</sub>"
CUT_OFF_NOTICE = (
    "**The reasoning was cut off by the token limit** before an answer. "
    "Raise *Max new tokens* in Generation settings and ask again."
)
# Why an answer ended short, under its stats line (the UI's export reads them back into notes).
STOPPED_NOTICE = "_Stopped: the answer above is as far as it got._"
ANSWER_CUT_OFF_NOTICE = (
    "_Cut off by the token limit ({tokens} tokens): raise *Max new tokens* in Generation settings for the rest._"
)
NO_ANSWER_NOTICE = "_The model returned no answer._"


def format_stats(stats: Stats, answered: bool = True) -> str:
    """The stats line under an answer (Markdown), then a notice when the answer ended short: stopped, cut off by
    the token limit (in the reasoning or in the answer), or nothing at all (``answered``: any answer text shown)."""
    parts = []
    if stats.time_to_first_token is not None:
        parts.append(f"first token {stats.time_to_first_token:.2f} s")
    parts.append(f"{stats.tokens_per_second:.1f} tok/s")
    parts.append(f"{stats.new_tokens} tokens ({stats.reasoning_tokens} reasoning · {stats.answer_tokens} answer)")
    line = f"{STATS_PREFIX} " + " · ".join(parts)
    if stats.turns_dropped:
        line += f" · {stats.turns_dropped} oldest turn(s) left out to fit the context"
    line += STATS_END
    if stats.stopped:
        return f"{line}\n\n{STOPPED_NOTICE}"
    if stats.reasoning_cut_off:
        return f"{line}\n\n{CUT_OFF_NOTICE}"
    if stats.hit_token_limit:
        return f"{line}\n\n{ANSWER_CUT_OFF_NOTICE.format(tokens=stats.new_tokens)}"
    if not answered:
        return f"{line}\n\n{NO_ANSWER_NOTICE}"
    return line


def is_stats_line(text: str) -> bool:
    return text.startswith(STATS_PREFIX)
