"""The Gradio app (medcot.ui.layout builds it). Only this package and medcot.zerogpu import Gradio."""
