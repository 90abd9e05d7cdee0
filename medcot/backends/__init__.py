"""Where the tokens come from: the local model, or a model server."""
