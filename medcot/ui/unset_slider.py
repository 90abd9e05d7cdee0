"""A generation-settings slider whose value may be unset (None): an API client that sets nothing gets the loaded
model's own defaults; the page fills the sliders in when it opens."""

from __future__ import annotations

import gradio as gr


class UnsetSlider(gr.Slider):
    """gr.Slider that passes None through both ways (gr.Slider turns None into its minimum), so /info's default is
    None. A subclass, not a patched instance: Gradio rebuilds a component from its class for each page session that
    gets an update. Gradio writes unset_slider.pyi beside it (git-ignored).
    """

    def get_block_name(self) -> str:  # the documented way to reuse another component's frontend
        return "slider"

    def preprocess(self, payload: float | None) -> float | None:  # type: ignore[override]
        return None if payload is None else super().preprocess(payload)

    def postprocess(self, value: float | None) -> float | None:  # type: ignore[override]
        return None if value is None else super().postprocess(value)
