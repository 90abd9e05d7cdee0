"""Run app.py as a ZeroGPU Space runs it, on a CPU-only torch: `python tests/helpers/zerogpu_space.py [app.py]`.

The real `spaces` package runs in ZeroGPU mode (SPACES_ZERO_GPU=true, SPACES_ZERO_DEVICE_API_URL and
ZEROGPU_PROC_SELF_CGROUP_PATH set by the caller): its CUDA emulation in the main process, its scheduling through the
device API, its forked worker per GPU. Replaced here is only what a CPU build of torch cannot do:

- `torch.version.cuda` (None on a CPU build; spaces reads it at import) and `torch._C._cuda_init` (missing on a CPU
  build; spaces keeps it to restore in its worker). The stand-in raises, as CUDA's first touch must never happen in
  the main process.
- `torch.cuda._is_in_bad_fork`, a lambda on a CPU build, which spaces' fork probe cannot pickle: the same answer
  from a module-level function.
- The worker's device steps `spaces.zero.torch.init` / `move` and the launch-time `pack`: pack stashes the emulated
  CUDA tensors' CPU originals (and, as the real pack does, leaves the main process's copies unusable); move points
  the emulated tensors back at those originals in the worker (packed or not yet, as the real move copies both), so
  the model there computes on the CPU, and spaces.aoti_compile in a GPU task compiles for the CPU.
- `Tensor.pin_memory`, which a CPU build refuses: the tensor itself.

With ZEROGPU_TEST_REPORT set, the packed tensors' count and size are written there as JSON at launch. The app's
ZeroGPU log (medcot.zerogpu, at INFO: the duration each request asks and the figures it comes from) goes to stderr.
"""

from __future__ import annotations

import json
import logging
import os
import runpy
import sys
from pathlib import Path
from typing import Any

import torch


def _not_in_bad_fork() -> bool:
    return False


def _no_cuda_init() -> None:
    raise RuntimeError("CUDA initialisation reached (a CPU-only torch has no CUDA)")


torch.version.cuda = "12.8"
torch._C._cuda_init = _no_cuda_init
torch.cuda._is_in_bad_fork = _not_in_bad_fork

import spaces  # noqa: E402, F401  (after the stand-ins above, before the app imports anything else)
from spaces.config import Config  # noqa: E402
from spaces.zero import torch as zero_torch  # noqa: E402
from spaces.zero.torch import patching  # noqa: E402

assert Config.zero_gpu, "SPACES_ZERO_GPU=true must be set"

_packed: list[tuple[torch.Tensor, torch.Tensor]] = []  # (emulated CUDA tensor, its CPU original)


def pack_in_memory() -> int:
    """At launch: keep the originals here instead of on disk; the emulated tensors then hold nothing, as after the
    real pack (using one in the main process raises spaces' offloaded-tensor error)."""
    size = patching._total_unpacked_size()
    for fake, original in list(patching.cuda_aliases.items()):
        if original is not None:
            _packed.append((fake, original))
            patching.cuda_aliases[fake] = None
    report = os.environ.get("ZEROGPU_TEST_REPORT")
    if report:
        Path(report).write_text(json.dumps({"tensors": len(_packed), "bytes": size}))
    return size


def no_device_init(nvidia_uuid: str) -> None:
    os.environ["CUDA_VISIBLE_DEVICES"] = nvidia_uuid  # what the real init does before touching CUDA


def move_back(callback: Any = None) -> None:
    """In the worker: the emulated CUDA tensors get their CPU originals' data (the real move copies them to CUDA),
    the packed ones' and, in a worker forked before the launch packed them (a GPU task at import), the others'."""
    unpacked = [(fake, original) for fake, original in patching.cuda_aliases.items() if original is not None]
    for fake, original in [*_packed, *unpacked]:
        fake.data = torch.Tensor(original)  # unwraps a Parameter, as the real move does


def pinned_in_place(tensor: torch.Tensor, device: Any = None) -> torch.Tensor:
    """Tensor.pin_memory (page-locked memory for copies to CUDA: none on a CPU build); spaces pins the weights of a
    program compiled ahead of time before sending them back from the worker (spaces/zero/torch/aoti.py)."""
    return tensor


def no_size() -> int:
    return 0


zero_torch.pack = pack_in_memory
zero_torch.init = no_device_init
zero_torch.move = move_back
zero_torch.size = no_size  # the transfer progress bar's total: nothing is transferred
torch.Tensor.pin_memory = pinned_in_place  # type: ignore[method-assign]

if __name__ == "__main__":
    zerogpu_log = logging.getLogger("medcot.zerogpu")
    zerogpu_log.setLevel(logging.INFO)
    zerogpu_log.addHandler(logging.StreamHandler(sys.stderr))
    app = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parents[2] / "app.py")
    sys.path.insert(0, str(app.parent))
    runpy.run_path(str(app), run_name="__main__")
