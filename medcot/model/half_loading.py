"""Reading a safetensors checkpoint straight into the f16 modes' layout (cpu_speed.py), a chunk of rows at a time."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import torch
from torch import nn

if TYPE_CHECKING:
    from transformers import PreTrainedModel

log = logging.getLogger(__name__)

# Bytes of a tensor read and converted at a time, so no full-size temporary copy is ever made.
_CHUNK_BYTES = 32 * 2**20
_SAFETENSORS_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def load_half(folder: Path) -> PreTrainedModel | None:
    """The model of a single model.safetensors in the f16 modes' layout (float32 norms and other small parameters,
    as optimize_for_cpu keeps them), or None where names or shapes differ (the caller uses transformers' loader).

    transformers maps the whole checkpoint, and every page read stays resident until it returns: from the 270M's
    float32 file a 1.9 GB peak for 0.5 GB of f16 weights. Plain reads in row chunks keep the peak near the final size.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig
    from transformers.initialization import no_init_weights

    file = folder / "model.safetensors"
    if not file.is_file():
        return None
    with no_init_weights():  # every weight is read from the file below; random init would only cost time
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder), dtype=torch.float16)
    model.tie_weights()  # from_pretrained ties after loading; here the tie must exist before the reads
    matmuls = {id(m.weight) for m in model.modules() if isinstance(m, nn.Linear | nn.Embedding)}
    with torch.no_grad():
        for parameter in model.parameters():
            if id(parameter) not in matmuls:
                parameter.data = parameter.data.float()
    targets = model.state_dict()
    filled: set[int] = set()
    buffer = torch.empty(_CHUNK_BYTES, dtype=torch.uint8)
    with open(file, "rb") as stream, torch.no_grad():
        header_size = int.from_bytes(stream.read(8), "little")
        header = json.loads(stream.read(header_size))
        header.pop("__metadata__", None)
        for name, info in sorted(header.items(), key=lambda item: item[1]["data_offsets"][0]):
            target, dtype = targets.get(name), _SAFETENSORS_DTYPES.get(info["dtype"])
            if target is None or dtype is None or list(target.shape) != info["shape"]:
                log.info("%s: %s does not match the model; using transformers' loader", file, name)
                return None
            stream.seek(8 + header_size + info["data_offsets"][0])
            _read_rows(stream, target, dtype, buffer)
            filled.add(target.data_ptr())
    missing = [name for name, tensor in targets.items() if tensor.data_ptr() not in filled]  # tied ones are filled
    if missing:
        log.info("%s lacks %s; using transformers' loader", file, ", ".join(missing[:3]))
        return None
    if (folder / "generation_config.json").is_file():
        model.generation_config = GenerationConfig.from_pretrained(folder)
    return model.eval()


def _read_rows(stream: BinaryIO, target: torch.Tensor, dtype: torch.dtype, buffer: torch.Tensor) -> None:
    """Read a tensor stored as `dtype` into `target` (any dtype), through `buffer` (bytes) a chunk of rows at a time:
    one buffer for every read, as a fresh one per chunk fragments the heap (hundreds of MB freed but held)."""
    rows = target.view(target.shape[0] if target.dim() > 1 else 1, -1)
    row_bytes = rows.shape[1] * dtype.itemsize
    per_chunk = max(1, len(buffer) // row_bytes)
    if per_chunk * row_bytes > len(buffer):
        buffer = torch.empty(row_bytes, dtype=torch.uint8)  # one row larger than the buffer
    for start in range(0, rows.shape[0], per_chunk):
        count = min(per_chunk, rows.shape[0] - start)
        raw = buffer[: count * row_bytes]
        if stream.readinto(memoryview(raw.numpy()).cast("B")) != len(raw):
            raise OSError(f"{stream.name} ends early: it is truncated")
        rows[start : start + count].copy_(raw.view(dtype).view(count, rows.shape[1]))
