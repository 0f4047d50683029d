"""Footprint: import time, and the memory a message costs.

Each figure is taken in a fresh interpreter (``python -c``), so imports start cold in
``sys.modules`` (the ``.pyc`` files are warm: every run after the first finds them) and
memory is measured with ``tracemalloc`` in a process doing nothing else. Lower is better
in this table, so its ratios are fastapi_stream's figure over the other's.

* import time of the package: ``import fastapi_stream`` against ``import faststream`` and,
  as the floor any FastAPI service pays, ``import fastapi``;
* import time of an app module: a FastAPI app with one NATS subscriber, written with each
  library's FastAPI integration (the raw one imports nats-py and FastAPI);
* memory per queued message on the memory broker, against an ``asyncio.Queue`` holding each
  message's JSON bytes;
* memory the test broker keeps per published message (what its mocks record), against
  FastStream's ``TestKafkaBroker``.
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import subprocess
import sys
import textwrap
import tracemalloc
from dataclasses import dataclass, field

from bench.common import PAYLOAD, Order
from bench.harness import FASTSTREAM, OURS, RAW

#: The app module both frameworks write alike; only where ``NatsRouter`` comes from differs.
_FRAMEWORK_APP = """
    from fastapi import FastAPI
    from pydantic import BaseModel
    from {module} import NatsRouter

    router = NatsRouter("nats://127.0.0.1:4222")

    class Order(BaseModel):
        id: int
        sku: str
        amount: float

    @router.subscriber("orders")
    async def handle(order: Order) -> None: ...

    app = FastAPI()
    app.include_router(router)
"""

#: Source of each app module, by implementation: the same service three ways.
APPS = {
    RAW: """
        import nats
        from fastapi import FastAPI
        from pydantic import BaseModel

        class Order(BaseModel):
            id: int
            sku: str
            amount: float

        app = FastAPI()
    """,
    FASTSTREAM: _FRAMEWORK_APP.format(module="faststream.nats.fastapi"),
    OURS: _FRAMEWORK_APP.format(module="fastapi_stream.nats"),
}

#: What each implementation imports for "import time of the package".
PACKAGES = {RAW: "fastapi", FASTSTREAM: "faststream", OURS: "fastapi_stream"}

#: Messages per memory measurement: enough that per-message figures dwarf fixed costs.
MEMORY_N = 20_000


@dataclass
class Figure:
    """One row: a value per implementation (median of ``repeat`` fresh interpreters)."""

    name: str
    unit: str
    #: Per implementation, the Python statement printing the measured value.
    probes: dict[str, str]
    values: dict[str, list[float]] = field(default_factory=dict)

    def median(self, implementation: str) -> float | None:
        values = self.values.get(implementation)
        return statistics.median(values) if values else None

    def ratio(self, numerator: str, denominator: str) -> float | None:
        top, bottom = self.median(numerator), self.median(denominator)
        return top / bottom if top is not None and bottom else None


def _import_probe(source: str) -> str:
    code = textwrap.dedent(source)
    return (
        "import time; _t = time.perf_counter()\n"
        f"exec(compile({code!r}, 'app', 'exec'), {{}})\n"
        "print((time.perf_counter() - _t) * 1000)"
    )


def _memory_probe(function: str) -> str:
    return f"import asyncio, bench.footprint as f; print(asyncio.run(f.{function}()))"


def figures() -> list[Figure]:
    return [
        Figure(
            "import time of the package",
            "ms",
            {impl: _import_probe(f"import {name}") for impl, name in PACKAGES.items()},
        ),
        Figure(
            "import time of an app module (FastAPI + one NATS subscriber)",
            "ms",
            {impl: _import_probe(source) for impl, source in APPS.items()},
        ),
        Figure(
            "memory broker: memory per queued message",
            "bytes",
            {RAW: _memory_probe("raw_queue_bytes"), OURS: _memory_probe("ours_queue_bytes")},
        ),
        Figure(
            "test broker: memory kept per published message",
            "bytes",
            {
                FASTSTREAM: _memory_probe("faststream_test_broker_bytes"),
                OURS: _memory_probe("ours_test_broker_bytes"),
            },
        ),
    ]


def measure(items: list[Figure], *, repeat: int) -> None:
    """Fill each figure's values: every probe in a fresh interpreter, interleaved."""
    for figure in items:
        names = list(figure.probes)
        for round_ in range(repeat):
            for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
                figure.values.setdefault(name, []).append(_run_probe(figure.probes[name]))
        print(
            f"  {figure.name:<62} "
            + "  ".join(f"{name} {figure.median(name):,.1f}" for name in names),
            flush=True,
        )


def _run_probe(code: str) -> float:
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    return float(done.stdout.strip().splitlines()[-1])


# -- memory probes (each runs alone in its own interpreter) ---------------------------------


def _traced(before: int) -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0] - before


def _start_tracing() -> int:
    gc.collect()
    tracemalloc.start()
    return tracemalloc.get_traced_memory()[0]


async def raw_queue_bytes() -> float:
    """An ``asyncio.Queue`` of each message's own JSON bytes."""
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    before = _start_tracing()
    for i in range(MEMORY_N):
        queue.put_nowait(Order(id=i, sku="apple", amount=2.5).model_dump_json().encode())
    return _traced(before) / MEMORY_N


async def ours_queue_bytes() -> float:
    """The memory broker's queue of a stopped subscriber, filled by ``broker.publish``."""
    from fastapi_stream import StreamRouter

    router = StreamRouter(f"memory://footprint?max_queue={MEMORY_N + 1}")

    @router.subscriber("orders", group="footprint")
    async def handle(order: Order) -> None: ...

    async with router.broker as broker:
        await broker.stop()  # the group's queue stays, and fills up
        await broker.publish(PAYLOAD, "orders")
        before = _start_tracing()
        for i in range(MEMORY_N):
            await broker.publish({**PAYLOAD, "id": i}, "orders")
        return _traced(before) / MEMORY_N


async def ours_test_broker_bytes() -> float:
    from fastapi_stream import StreamRouter
    from fastapi_stream.testing import TestStreamBroker

    router = StreamRouter("memory://footprint-test")

    @router.subscriber("orders")
    async def handle(order: Order) -> None: ...

    async with TestStreamBroker(router) as broker:
        await broker.publish(PAYLOAD, "orders")
        before = _start_tracing()
        for i in range(MEMORY_N):
            await broker.publish({**PAYLOAD, "id": i}, "orders")
        return _traced(before) / MEMORY_N


async def faststream_test_broker_bytes() -> float:
    from faststream.kafka import KafkaBroker, TestKafkaBroker

    broker = KafkaBroker()

    @broker.subscriber("orders")
    async def handle(order: Order) -> None: ...

    async with TestKafkaBroker(broker) as test_broker:
        await test_broker.publish(PAYLOAD, "orders")
        before = _start_tracing()
        for i in range(MEMORY_N):
            await test_broker.publish({**PAYLOAD, "id": i}, "orders")
        return _traced(before) / MEMORY_N
