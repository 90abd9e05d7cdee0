"""The Gradio app: layout (layout.py), its event handlers (handlers.py), chat rendering, stream plumbing, the base
model comparison, deep links and the conversation export. Only this package and medcot.zerogpu import Gradio."""
