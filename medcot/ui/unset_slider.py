"""A generation-settings slider whose value may be unset (None), so that an API client that sets nothing gets the
loaded model's own defaults (known only once the model has loaded); the page fills the sliders in when it opens."""

from __future__ import annotations

import gradio as gr


class UnsetSlider(gr.Slider):
    """gr.Slider, drawn by the Slider's own frontend, that passes None through both ways (gr.Slider turns None into
    its minimum): its config value, and so /info's default for API clients, is None.

    A subclass, not a patched instance: Gradio rebuilds a component from its class for each page session that gets
    an update (Blocks.postprocess_data). Defining it makes Gradio write unset_slider.pyi beside this module (its
    component_meta does so for every component class; the file is git-ignored).
    """

    def get_block_name(self) -> str:  # the documented way to reuse another component's frontend
        return "slider"

    def preprocess(self, payload: float | None) -> float | None:  # type: ignore[override]
        return None if payload is None else super().preprocess(payload)

    def postprocess(self, value: float | None) -> float | None:  # type: ignore[override]
        return None if value is None else super().postprocess(value)
