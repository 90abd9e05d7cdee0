"""Hugging Face Space entry point: build the MedCoT demo from the library and launch it."""

from medcot.engine import Engine
from medcot.zerogpu import gpu_stream, start_engine

# Off ZeroGPU the model loads in a background thread: started before Gradio is imported, the two overlap.
engine = start_engine(Engine.from_env())

from medcot.ui.layout import build_demo, launch_kwargs, queue  # noqa: E402

demo = queue(build_demo(engine, gpu_stream(engine)), engine)

if __name__ == "__main__":
    demo.launch(**launch_kwargs())
