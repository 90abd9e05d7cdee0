"""Hugging Face Space entry point: build the MedCoT demo from the library and launch it."""

from medcot.engine import Engine
from medcot.ui import build_demo, launch_kwargs, queue
from medcot.zerogpu import start_engine

engine = start_engine(Engine.from_env())
demo = queue(build_demo(engine), engine)

if __name__ == "__main__":
    demo.launch(**launch_kwargs())
