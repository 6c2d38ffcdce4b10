"""Inference backends: what runs a resident network's batches. torch eager, or ONNX Runtime on a
graph exported from the same module at load time (in memory, from the checked safetensors: no
file to trust and no pickle).

Every backend is a callable ``x -> y`` running a module's ``forward_valid`` (service.models.valid:
the centre of the zero-padded ``forward``) on (N, 1, h, w) tensors in 0..1 of the model's device
and dtype; the batcher, the tiling, the deadlines and the OOM splitting do not know which one
runs. Before the unpadded form one graph took a validity mask for batches mixing window
sizes and another did without (the masked graph's multiplications cost a quarter of ESPCN
x3's time); with it no batch needs a mask, and each model is exported once.

``SR_BACKEND=auto`` times both on a batch of the configured size at start-up and keeps the
faster per model, torch only when it wins by ``TORCH_MARGIN`` (on a CUDA device torch, which
runs fp16 there; the CPU build of ONNX Runtime has no CUDA provider).
"""

from __future__ import annotations

import copy
import functools
import io
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

# What runs a batch: the module's forward_valid (torch eager) or an OnnxRunner, called alike.
Runner = Callable[[torch.Tensor], torch.Tensor]


class _Valid(nn.Module):
    """The module's served form as its ``forward``, for export."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.module.forward_valid(x)
        return out


def export_onnx(module: nn.Module) -> bytes:
    """The module's ``forward_valid`` as an ONNX graph with dynamic batch, height and width."""
    side = 2 * int(module.halo) + 8  # type: ignore[arg-type]
    sample = torch.rand(1, 1, side, side)
    graph = _Valid(copy.deepcopy(module).float().eval())
    axes = {"x": {0: "n", 2: "h", 3: "w"}, "y": {0: "n", 2: "rh", 3: "rw"}}
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript exporter announces its deprecation; the graph it writes is what we test.
        warnings.simplefilter("ignore")
        torch.onnx.export(graph, (sample,), buffer, input_names=["x"], output_names=["y"], opset_version=17,
                          dynamo=False, dynamic_axes=axes)
    return buffer.getvalue()


@functools.cache
def _register_shared_arena() -> None:
    """One CPU memory arena for every session in the process, registered once (ONNX Runtime's
    environment is process-wide). Each session kept its own arena at the peak of its largest
    run: with every shipped model resident that was 770 MiB against 400 MiB with one shared
    arena (sessions run one at a time, on the device thread). The memory budget for requests
    is what the container's limit leaves beside this."""
    import onnxruntime as ort

    memory = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
    ort.create_and_register_allocator(memory, ort.OrtArenaCfg(0, -1, -1, -1))


class OnnxRunner:
    """ONNX Runtime sessions behaving like the module's ``forward`` (CPU, float32).

    With ``crowded`` (a callable the runtime gives: is other CPU work running or waiting?) and
    more than one thread, a batch runs on half the threads (one, on two cores) while the cores
    are crowded and on all of them while they are not. Under load the network's threads and
    the codec threads fight over two cores, and a parallel convolution waits for its slowest
    thread whenever one is preempted: at 128x128 x3 c=16 one intra-op thread served 137.6 and 138.1 images/s against
    121.0 and 122.8 with two (python -m benchmarks.run --configs onnxruntime
    onnxruntime-1thread --sizes 128 --concurrency 16 --seconds 5, twice). Alone, a request
    still has both cores for its network.
    """

    def __init__(self, module: nn.Module, threads: int, *, crowded: Callable[[], bool] | None = None) -> None:
        graph = export_onnx(module)
        self.threads = threads
        self.narrow = max(1, threads // 2)  # measured on two cores only: one thread there
        self._crowded = crowded if threads > 1 else None
        widths = {threads, self.narrow} if self._crowded is not None else {threads}
        self._sessions = {width: _session(graph, width) for width in widths}  # threads -> session

    @property
    def session(self) -> Any:
        """The session on every thread."""
        return self._sessions[self.threads]

    def width_now(self) -> int:
        """The intra-op threads the next batch gets."""
        return self.narrow if self._crowded is not None and self._crowded() else self.threads

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        (y,) = self._sessions[self.width_now()].run(None, {"x": x.contiguous().numpy()})
        return torch.from_numpy(y)


def _session(graph: bytes, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    # Intra-op threads are the network's share of the cores; one inter-op thread, since a
    # sub-pixel network is a chain with nothing to run side by side.
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # ONNX Runtime's threads spin between runs by default, which takes the cores the codec
    # threads need for decode, colour work and encode; waiting threads sleep instead.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    _register_shared_arena()
    options.add_session_config_entry("session.use_env_allocators", "1")
    return ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])


def median_ms(runner: Runner, x: torch.Tensor, repeats: int = 3) -> float:
    """The median wall ms of ``runner(x)``, after one untimed run."""
    with torch.inference_mode():
        runner(x)  # the first run pays lazy initialisation
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            runner(x)
            times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


# On a CPU, torch must beat ONNX Runtime by more than this to be picked. The server's plan
# depends on the whole mix (two device workers, and torch's pool at one thread, only when every
# network runs on ONNX Runtime), so one close model flipping on start-up noise moved all of it:
# two starts of the defaults gave 98.9 and 132.3 images/s at 128x128 x3 c=16 (python -m
# benchmarks.run --configs defaults onnxruntime --sizes 128 --concurrency 16, twice). A model
# torch runs clearly faster still goes to torch.
TORCH_MARGIN = 0.85


def choose_runner(
    module: nn.Module, setting: str, device: torch.device, *, threads: int, batch: int, side: int,
    crowded: Callable[[], bool] | None = None,
) -> tuple[Runner, dict[str, Any]]:
    """The runner for one resident module and why: the setting, or for ``auto`` a timing of
    every backend on a (batch, 1, side, side) canvas. ``crowded``: see :class:`OnnxRunner`."""
    eager: Runner = module.forward_valid  # type: ignore[assignment]
    if setting == "torch" or device.type != "cpu":
        if setting == "onnxruntime":
            raise RuntimeError(f"SR_BACKEND=onnxruntime runs on the CPU only, not on {device}")
        return eager, {"backend": "torch"}
    onnx = OnnxRunner(module, threads, crowded=crowded)
    if setting == "onnxruntime":
        return onnx, {"backend": "onnxruntime"}
    canvas = torch.rand(batch, 1, side, side)
    timings = {"torch": median_ms(eager, canvas), "onnxruntime": median_ms(onnx, canvas)}
    best = "torch" if timings["torch"] < TORCH_MARGIN * timings["onnxruntime"] else "onnxruntime"
    runner = onnx if best == "onnxruntime" else eager
    return runner, {"backend": best, "timed_ms": {k: round(v, 2) for k, v in timings.items()}}
