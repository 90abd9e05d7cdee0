"""Hugging Face Space entry point: build the MedCoT demo from the library and launch it."""

import spaces  # noqa: F401  (first: on ZeroGPU it must be imported before torch and anything that imports it)

from medcot.engine import Engine
from medcot.zerogpu import gpu_stream, start_engine

# On ZeroGPU the model loads here, at import; elsewhere in a background thread, overlapping Gradio's import.
engine = start_engine(Engine.from_env())

from medcot.ui.layout import build_demo, launch_kwargs, queue  # noqa: E402

demo = queue(build_demo(engine, gpu_stream(engine)), engine)

if __name__ == "__main__":
    demo.launch(**launch_kwargs())
