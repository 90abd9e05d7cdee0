"""Hugging Face Space entry point: build the MedCoT demo from the library and launch it."""

import spaces  # noqa: F401, I001  (first: on ZeroGPU it must be imported before torch and anything that imports it)
import sys

from medcot.engine import Engine
from medcot.model.progress import ProgressLines
from medcot.zerogpu import gpu_stream, start_engine

# On ZeroGPU the model loads here, at import; elsewhere in a background thread, overlapping Gradio's import. Its
# progress goes to the terminal (the Space's log) as the CLI prints it: a first start converts for a minute or two.
engine = start_engine(Engine.from_env(), ProgressLines(sys.stderr))

from medcot.ui.layout import build_demo, launch_kwargs, queue  # noqa: E402

demo = queue(build_demo(engine, gpu_stream(engine)), engine)

if __name__ == "__main__":
    demo.launch(**launch_kwargs())
