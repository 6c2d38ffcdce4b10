"""Every backend computes what torch computes: every shipped model, odd sizes, batches of
mixed tiles, within 1e-4 before rounding; and through HTTP, the same pixels."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
import pytest
import torch
from fastapi.testclient import TestClient

from service.models.backends import TORCH_MARGIN, OnnxRunner, choose_runner, export_onnx
from service.models.resident import ModelSet
from service.serving.tiling import assemble

from .helpers import SHIPPED_STORE, decode, image_bytes, post

MODELS = ModelSet.load(SHIPPED_STORE, torch.device("cpu"), torch.float32)
NAMES = [f"{m.method}-x{m.scale}" for m in MODELS]


@pytest.fixture(scope="module")
def onnx_runners() -> dict[str, OnnxRunner]:
    return {f"{m.method}-x{m.scale}": OnnxRunner(m.module, threads=1) for m in MODELS}


@pytest.mark.parametrize("name", NAMES)
def test_the_exported_graphs_hold_no_op_that_leaves_onnxruntimes_blocked_layout(name: str) -> None:
    # Resize (the bicubic base) and PRelu have no NCHWc kernel in ONNX Runtime: each took the
    # tensors out of the blocked layout and back, a third of ecbsr's time (service.models.valid).
    model = next(m for m in MODELS if f"{m.method}-x{m.scale}" == name)
    ops = {node.op_type for node in onnx.load_from_string(export_onnx(model.module)).graph.node}
    assert "Conv" in ops
    assert not ops & {"Resize", "Upsample", "PRelu"}


@pytest.mark.parametrize("name", NAMES)
def test_onnxruntime_equals_torch_on_every_shipped_model(name: str, onnx_runners: dict[str, OnnxRunner]) -> None:
    model = next(m for m in MODELS if f"{m.method}-x{m.scale}" == name)
    generator = torch.Generator().manual_seed(len(name))
    halo = model.halo
    # A batch of mixed tiles: windows of several sizes on one canvas; and an odd-sized batch.
    windows = [torch.rand(h + 2 * halo, w + 2 * halo, generator=generator) for h, w in [(23, 17), (9, 31), (31, 31), (1, 5)]]
    odd = torch.rand(2, 1, 13 + 2 * halo, 29 + 2 * halo, generator=generator)
    with torch.inference_mode():
        for x in (assemble(windows), odd):
            reference = model.module.forward_valid(x)
            out = onnx_runners[name](x)
            assert out.shape == reference.shape
            assert (out - reference).abs().max().item() <= 1e-4


def test_each_model_is_one_graph_with_one_input(onnx_runners: dict[str, OnnxRunner]) -> None:
    assert [i.name for i in onnx_runners["espcn-x3"].session.get_inputs()] == ["x"]


def test_a_crowded_cpu_runs_the_batch_on_one_thread_with_the_same_result() -> None:
    model = next(m for m in MODELS if m.method == "espcn" and m.scale == 3)
    crowded = [False]
    runner = OnnxRunner(model.module, threads=2, crowded=lambda: crowded[0])
    x = torch.rand(2, 1, 30, 26)
    with torch.inference_mode():
        assert runner.width_now() == 2
        wide = runner(x)
        crowded[0] = True
        assert runner.width_now() == 1
        narrow, reference = runner(x), model.module.forward_valid(x)
    assert (narrow - wide).abs().max().item() <= 1e-5
    assert (narrow - reference).abs().max().item() <= 1e-4
    # One thread: nothing to narrow, one set of sessions.
    assert OnnxRunner(model.module, threads=1, crowded=lambda: True).width_now() == 1


def test_auto_times_both_and_keeps_a_backend() -> None:
    model = next(m for m in MODELS if m.method == "espcn" and m.scale == 3)
    runner, info = choose_runner(model.module, "auto", torch.device("cpu"), threads=1, batch=2, side=40)
    assert info["backend"] in ("torch", "onnxruntime")
    assert set(info["timed_ms"]) == {"torch", "onnxruntime"}  # type: ignore[arg-type]
    timed = info["timed_ms"]
    # Torch only when it is clearly faster: one close model flipping moved the server's plan.
    torch_wins = timed["torch"] < TORCH_MARGIN * timed["onnxruntime"]  # type: ignore[index]
    assert info["backend"] == ("torch" if torch_wins else "onnxruntime")
    x = torch.rand(1, 1, 20, 20)
    with torch.inference_mode():
        assert torch.allclose(runner(x), model.module.forward_valid(x), atol=1e-4)


def test_a_named_backend_is_used_and_cuda_is_refused_for_onnxruntime() -> None:
    model = MODELS.get("espcn", 2)
    assert model is not None
    _, info = choose_runner(model.module, "torch", torch.device("cpu"), threads=1, batch=1, side=16)
    assert info == {"backend": "torch"}
    with pytest.raises(RuntimeError, match="CPU only"):
        choose_runner(model.module, "onnxruntime", torch.device("cuda"), threads=1, batch=1, side=16)


@pytest.mark.parametrize("method", ["espcn", "deconv", "espcn-large", "ecbsr", "ecbsr-large"])
def test_the_server_answers_the_same_pixels_on_either_backend(
    make_client: Callable[..., TestClient], method: str
) -> None:
    data = image_bytes("RGB", (45, 31))
    torch_client, onnx_client = make_client(backend="torch"), make_client(backend="onnxruntime")
    a = np.asarray(decode(post(torch_client, data, scale=3, method=method).content)).astype(int)
    b = np.asarray(decode(post(onnx_client, data, scale=3, method=method).content)).astype(int)
    models = onnx_client.get("/v1/models").json()["models"]
    assert {m["backend"] for m in models} == {"onnxruntime"}
    assert np.abs(a - b).max() <= 1 and (a != b).mean() < 1e-3  # rounding of equal sums only
