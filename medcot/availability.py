"""What the engine can do now, in sentences for users: its status line, and why the base-model comparison cannot run.

Functions of what is loaded (or the load's error and progress), so that the engine only holds the state.
"""

from __future__ import annotations

from medcot.model.loading import LoadedModel


def status_line(loaded: LoadedModel | None, error: str | None, progress: tuple[str, float | None]) -> str:
    """One line for banners: what is loaded, what is loading, or what went wrong."""
    if loaded is not None and loaded.server is not None:
        return loaded.server.describe()  # what it is connected to, or why it cannot answer
    if loaded is not None:
        notes = " ".join(loaded.notes)
        return f"{loaded.describe()}. {notes}".strip()
    if error:
        return error
    message, fraction = progress
    return f"{message}…" + ("" if fraction is None else f" {fraction:.0%}")


def compare_unavailable(loaded: LoadedModel | None, error: str | None) -> str | None:
    """Why the base-model comparison cannot run (a sentence for users), or None when it can."""
    if loaded is None:
        return error or "The model is still loading."
    if loaded.server is not None:
        return loaded.server.compare_unavailable()
    if loaded.kind == "base":
        if loaded.embedded:
            return "The embedded base model runs without the medical adapter: there is nothing to compare."
        return "No adapter is configured (MEDCOT_ADAPTER is empty): the base model runs alone."
    if loaded.kind == "merged":
        return (
            f"`{loaded.adapter_id}` holds merged weights, so the base model is not loaded beside it "
            "(point MEDCOT_ADAPTER at the LoRA adapter to compare)."
        )
    if loaded.merged and loaded.base_delta is None:
        return (
            "This adapter is not plain LoRA (DoRA, biases or fully trained modules), so its merge cannot be "
            "undone for the base model; set MEDCOT_MERGE=0 to keep it separate and compare."
        )
    return None
