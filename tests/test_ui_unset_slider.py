"""medcot.ui.unset_slider: no value in the page's config (so no default for API clients), None passed through."""

from __future__ import annotations

import gradio as gr

from medcot.ui.unset_slider import UnsetSlider


def test_an_unset_slider_is_drawn_as_a_slider_and_passes_none_through() -> None:
    with gr.Blocks() as demo:
        slider = UnsetSlider(0.0, 2.0, step=0.05, label="Temperature")
    config = next(c for c in demo.get_config_file()["components"] if c["id"] == slider._id)
    assert config["type"] == "slider" and config["props"].get("value") is None
    assert slider.preprocess(None) is None and slider.preprocess(0.3) == 0.3
    assert slider.postprocess(None) is None and slider.postprocess(0.3) == 0.3
    copy = type(slider)(**slider.recover_kwargs(config["props"]))  # as Gradio rebuilds it for a page session
    assert copy.preprocess(None) is None
