"""The batcher in plain asyncio with fake models: batching, faults, deadlines, cancellation."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from service.errors import ClientDisconnected, DeadlineExceeded, InferenceFailed
from service.models.resident import ResidentModel
from service.models.store import ModelCard
from service.serving.batching import Batcher, BatchStats


class Doubler(torch.nn.Module):
    """A 'network' with a known answer: nearest x2 of the input, times 2. Halo 0."""

    scale = 2
    halo = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest") * 2


def fake_model(method: str = "fake") -> ResidentModel:
    card = ModelCard(name=f"{method}-x2", version="1", arch=method, scale=2, sha256="0" * 64, directory=Path("."))
    return ResidentModel(method, 2, card, Doubler(), torch.device("cpu"), torch.float32)


class Recorder:
    """A run_batch that records batch sizes and can be told to fail or to be slow."""

    def __init__(self) -> None:
        self.batches: list[int] = []
        self.fail_when: Callable[[torch.Tensor], bool] = lambda canvas: False
        self.delay_s = 0.0
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, model: ResidentModel, canvas: torch.Tensor) -> torch.Tensor:
        self.gate.wait(5)
        self.batches.append(canvas.shape[0])
        time.sleep(self.delay_s)
        if self.fail_when(canvas):
            raise RuntimeError("injected failure")
        with torch.no_grad():
            return model.module(canvas / 255.0).clamp(0, 1) * 255.0


POISON = 7.0  # requests are recognisable by value: a poisoned one is all 7s


def poisoned(canvas: torch.Tensor) -> bool:
    return bool((canvas == POISON).all(dim=(1, 2, 3)).any())


def assert_only_the_poisoned_failed(values: list[float], results: list[object]) -> None:
    for value, result in zip(values, results, strict=True):
        if value == POISON:
            assert isinstance(result, InferenceFailed)
        else:
            assert torch.allclose(result, torch.full((8, 8), value * 2))  # type: ignore[arg-type]


def make_batcher(recorder: Recorder, **kwargs: object) -> Batcher:
    options: dict[str, object] = {"max_batch_tiles": 8, "tile_size": 8, "max_batch_delay_s": 0.005}
    options.update(kwargs)
    return Batcher(torch.device("cpu"), recorder, **options)  # type: ignore[arg-type]


def expected(plane: torch.Tensor) -> torch.Tensor:
    return (plane.repeat_interleave(2, 0).repeat_interleave(2, 1) * 2).clamp(0, 255)


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def within(seconds: float) -> float:
    """An absolute deadline ``seconds`` from now, as a request has."""
    return time.monotonic() + seconds


def start(batcher: Batcher, model: ResidentModel, plane: torch.Tensor, seconds: float = 10,
          **kwargs: object) -> asyncio.Task[torch.Tensor]:
    async def planes() -> torch.Tensor:
        return (await batcher.run(model, plane, within(seconds), **kwargs)).plane  # type: ignore[arg-type]

    return asyncio.ensure_future(planes())


def test_results_equal_the_whole_image_answer_for_mixed_sizes() -> None:
    async def main() -> None:
        rec = Recorder()
        batcher = make_batcher(rec)
        batcher.start()
        model = fake_model()
        planes = [torch.rand(h, w) * 100 for h, w in [(1, 1), (30, 17), (8, 8), (5, 41), (64, 64)]]
        outs = await asyncio.gather(*(start(batcher, model, p) for p in planes))
        for plane, out in zip(planes, outs, strict=True):
            assert torch.allclose(out, expected(plane), atol=1e-4)
        await batcher.stop()

    run(main())


def test_a_result_says_how_long_it_queued_and_ran() -> None:
    async def main() -> None:
        rec = Recorder()
        rec.delay_s = 0.05
        batcher = make_batcher(rec, max_batch_tiles=1)
        batcher.start()
        model = fake_model()
        result = await batcher.run(model, torch.rand(16, 8), within(10))  # 2 tiles, 2 batches
        assert result.infer_s >= 0.09  # the device time of both its batches
        assert 0 <= result.queue_s < 0.04  # an idle device takes it at once
        await batcher.stop()

    run(main())


def test_concurrent_requests_share_batches() -> None:
    async def main() -> None:
        rec = Recorder()
        rec.gate.clear()  # hold the device so requests pile up, as under load
        batcher = make_batcher(rec, max_batch_tiles=6)
        batcher.start()
        model = fake_model()
        tasks = [start(batcher, model, torch.rand(8, 8)) for _ in range(12)]
        await asyncio.sleep(0.05)
        rec.gate.set()
        await asyncio.gather(*tasks)
        assert sum(rec.batches) == 12  # one tile each
        assert max(rec.batches) == 6  # bounded by max_batch_tiles
        assert len(rec.batches) <= 4
        await batcher.stop()

    run(main())


def test_idle_device_dispatches_at_once() -> None:
    async def main() -> None:
        rec = Recorder()
        batcher = make_batcher(rec, max_batch_delay_s=5.0)  # a long delay must not apply
        batcher.start()
        started = time.monotonic()
        await batcher.run(fake_model(), torch.rand(4, 4), within(10))
        assert time.monotonic() - started < 1.0
        await batcher.stop()

    run(main())


def test_a_failing_batch_fails_only_its_requests() -> None:
    async def main() -> None:
        rec = Recorder()
        rec.fail_when = poisoned
        batcher = make_batcher(rec, max_batch_tiles=1)
        batcher.start()
        model = fake_model()
        values = [3.0, 3.0, 3.0, 7.0, 5.0]
        tasks = [start(batcher, model, torch.full((4, 4), v)) for v in values]
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert_only_the_poisoned_failed(values, results)
        # The batcher keeps running after the failure.
        again = await batcher.run(model, torch.full((2, 2), 1.0), within(10))
        assert torch.allclose(again.plane, torch.full((4, 4), 2.0))
        await batcher.stop()

    run(main())


def test_a_batch_that_returns_too_few_results_fails_its_tiles() -> None:
    async def main() -> None:
        def one_short(model: ResidentModel, canvas: torch.Tensor) -> torch.Tensor:
            return model.module(canvas)[1:]

        batcher = Batcher(torch.device("cpu"), one_short, max_batch_tiles=4, tile_size=8,  # type: ignore[arg-type]
                          max_batch_delay_s=0.005)
        batcher.start()
        with pytest.raises(InferenceFailed):
            await batcher.run(fake_model(), torch.rand(16, 16), within(10))  # 4 tiles, 3 results
        await batcher.stop()

    run(main())


def test_out_of_memory_splits_the_batch_and_retries() -> None:
    async def main() -> None:
        rec = Recorder()
        rec.gate.clear()

        def oom(canvas: torch.Tensor) -> bool:
            if canvas.shape[0] > 2:
                raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
            return False

        rec.fail_when = oom
        batcher = make_batcher(rec, max_batch_tiles=8)
        batcher.start()
        model = fake_model()
        blocker = start(batcher, model, torch.rand(2, 2))
        await asyncio.sleep(0.02)
        planes = [torch.rand(8, 8) for _ in range(8)]
        tasks = [start(batcher, model, p) for p in planes]
        await asyncio.sleep(0.02)
        rec.gate.set()
        await blocker
        for plane, task in zip(planes, tasks, strict=True):
            assert torch.allclose(await task, expected(plane), atol=1e-4)
        # Tried as 8, split to 4s, then 2s, which succeed: every tile ran exactly once.
        assert rec.batches[1:] == [8, 4, 2, 2, 4, 2, 2]
        await batcher.stop()

    run(main())


def test_expired_requests_leave_the_queue() -> None:
    async def main() -> None:
        rec = Recorder()
        rec.delay_s = 0.2
        batcher = make_batcher(rec, max_batch_tiles=1)
        batcher.start()
        model = fake_model()
        first = start(batcher, model, torch.rand(8, 8))
        late = start(batcher, model, torch.rand(8, 8), seconds=0.05)
        await first
        with pytest.raises(DeadlineExceeded):
            await late
        await asyncio.sleep(0.3)
        assert rec.batches == [1]  # the expired request never reached the device
        assert batcher.queued_tiles == 0
        await batcher.stop()

    run(main())


def test_abandoned_requests_cost_nothing() -> None:
    async def main() -> None:
        rec = Recorder()
        rec.gate.clear()
        batcher = make_batcher(rec, max_batch_tiles=4)
        batcher.start()
        model = fake_model()
        first = start(batcher, model, torch.rand(8, 8))
        await asyncio.sleep(0.02)
        hung_up = asyncio.Event()
        dropped = start(batcher, model, torch.rand(32, 32), abandoned=hung_up.wait)  # 16 tiles
        kept = start(batcher, model, torch.rand(8, 8))
        await asyncio.sleep(0)
        assert batcher.queued_tiles == 17
        hung_up.set()  # the client goes away, before the next batch is sealed
        with pytest.raises(ClientDisconnected):
            await dropped
        # Its tiles left the queue at once; kept's one tile is already sealed into the next
        # batch (round robin over requests), so nothing is left queued.
        assert batcher.queued_tiles == 0
        rec.gate.set()
        await first
        await kept
        assert sum(rec.batches) == 2
        await batcher.stop()

    run(main())


def test_background_tiles_only_fill_the_slots_interactive_requests_leave() -> None:
    async def main() -> None:
        contents: list[set[float]] = []
        rec = Recorder()
        rec.gate.clear()
        recorded = rec.__call__

        def recording(model: ResidentModel, canvas: torch.Tensor) -> torch.Tensor:
            out = recorded(model, canvas)
            contents.append({float(v) for v in canvas.amax(dim=(1, 2, 3))})
            return out

        batcher = Batcher(torch.device("cpu"), recording, max_batch_tiles=4, tile_size=8, max_batch_delay_s=0.005)
        batcher.start()
        model = fake_model()
        # A video chunk's eight frames, four tiles each, queued first; then a request of 8 tiles.
        frames = [start(batcher, model, torch.full((8, 32), 1.0), background=True) for _ in range(8)]
        await asyncio.sleep(0.05)
        request = start(batcher, model, torch.full((8, 64), 5.0))
        await asyncio.sleep(0.05)
        rec.gate.set()
        await asyncio.gather(request, *frames)
        await batcher.stop()
        # Two background batches were sealed before the request came; its 8 tiles fill the
        # next two batches whole (round robin alone would have spread them over eight).
        assert contents[2] == contents[3] == {5.0}
        assert all(batch == {1.0} for batch in contents[4:]) and len(contents) == 2 + 2 + 6

    run(main())


def test_batches_never_mix_models() -> None:
    async def main() -> None:
        rec = Recorder()
        rec.gate.clear()
        seen: list[set[str]] = []
        batcher = make_batcher(rec, on_batch=lambda s: seen.append({s.model.method}))
        batcher.start()
        a, b = fake_model("a"), fake_model("b")
        blocker = start(batcher, a, torch.rand(2, 2))
        await asyncio.sleep(0.02)
        tasks = [start(batcher, m, torch.rand(8, 8)) for m in (a, b, a, b, a)]
        rec.gate.set()
        await blocker
        await asyncio.gather(*tasks)
        assert rec.batches[1:] == [3, 2] or rec.batches[1:] == [2, 3]
        await batcher.stop()

    run(main())


def test_stats_report_each_batch() -> None:
    async def main() -> None:
        stats: list[BatchStats] = []
        rec = Recorder()
        batcher = make_batcher(rec, on_batch=stats.append, max_batch_tiles=2)
        batcher.start()
        await batcher.run(fake_model(), torch.rand(16, 8), within(10))
        assert sum(s.tiles for s in stats) == 2 and all(s.seconds >= 0 for s in stats)
        # The measured drain rate now prices the queue: 4 queued tiles take a positive time.
        rec.gate.clear()
        blocker = start(batcher, fake_model(), torch.rand(8, 8))
        waiting = start(batcher, fake_model(), torch.rand(16, 16))
        await asyncio.sleep(0.02)
        assert batcher.expected_wait_s() > 0
        rec.gate.set()
        await asyncio.gather(blocker, waiting)
        await batcher.stop()

    run(main())


def test_batched_tiles_equal_whole_plane_inference_on_a_shipped_model() -> None:
    from service.imaging.borders import upscale_plane
    from service.models.inference import run_network
    from service.models.resident import ModelSet

    from .helpers import SHIPPED_STORE

    models = ModelSet.load(SHIPPED_STORE, torch.device("cpu"), torch.float32)

    async def main() -> None:
        batcher = Batcher(torch.device("cpu"), run_network, max_batch_tiles=3, tile_size=24,
                          max_batch_delay_s=0.001)
        batcher.start()
        planes = [torch.rand(h, w, generator=torch.Generator().manual_seed(h * w)) * 255
                  for h, w in [(1, 1), (3, 70), (50, 50), (61, 29), (24, 24)]]
        for method in ("espcn", "deconv"):
            for scale in (2, 3, 4):
                model = models.get(method, scale)
                assert model is not None
                tasks = [start(batcher, model, p, seconds=30) for p in planes]
                for plane, task in zip(planes, tasks, strict=True):
                    out = await task
                    with torch.no_grad():
                        whole = upscale_plane(model.module, plane / 255).clamp(0, 1) * 255
                    assert out.shape == whole.shape
                    assert (out - whole).abs().max().item() / 255 <= 1e-4
        await batcher.stop()

    run(main())


def test_a_poisoned_tile_fails_only_its_own_request_even_inside_a_shared_batch() -> None:
    async def main() -> None:
        rec = Recorder()
        rec.gate.clear()  # pile everything up so the poisoned tile shares batches with others
        rec.fail_when = poisoned
        batcher = make_batcher(rec, max_batch_tiles=8)
        batcher.start()
        model = fake_model()
        blocker = start(batcher, model, torch.full((4, 4), 1.0))
        await asyncio.sleep(0.02)
        values = [3.0, 5.0, 7.0, 2.0, 4.0, 6.0]
        tasks = [start(batcher, model, torch.full((4, 4), v)) for v in values]
        await asyncio.sleep(0.02)
        rec.gate.set()
        await blocker
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert_only_the_poisoned_failed(values, results)
        assert max(rec.batches) == 6  # they did share a batch, which was split to find the bad tile
        await batcher.stop()

    run(main())


def test_two_workers_run_two_batches_at_once_from_the_one_queue() -> None:
    """SR_INFER_WORKERS=2 (the CPU default on ONNX Runtime): while one batch runs, the next one
    starts on the second worker instead of waiting; every answer is still the right one."""
    async def main() -> tuple[int, list[int]]:
        both_running = threading.Barrier(2, timeout=5)
        seen: list[int] = []

        def meeting(model: ResidentModel, canvas: torch.Tensor) -> torch.Tensor:
            seen.append(batcher.running_batches)
            both_running.wait()  # raises BrokenBarrierError (a failed batch) unless two run together
            with torch.no_grad():
                return model.module(canvas / 255.0).clamp(0, 1) * 255.0

        batcher = Batcher(torch.device("cpu"), meeting, max_batch_tiles=1, tile_size=8, max_batch_delay_s=0.0,
                          workers=2)
        batcher.start()
        model = fake_model()
        planes = [torch.full((8, 8), float(v)) for v in (1, 2)]
        outs = await asyncio.gather(*(start(batcher, model, p) for p in planes))
        for plane, out in zip(planes, outs, strict=True):
            assert torch.allclose(out, expected(plane))
        await batcher.stop()
        return batcher.running_batches, seen

    running_after, seen = run(main())
    assert running_after == 0 and max(seen) == 2
