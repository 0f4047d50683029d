"""``make bench``: run the workloads and write bench/results/latest.{md,json}.

python -m bench.run [--n 5000] [--seconds 2] [--repeat 3] [--only nats]
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from bench import footprint, kafka, memory, mqtt, nats, outbox, rabbit, redis
from bench.harness import Workload, report, run

RESULTS = Path(__file__).parent / "results" / "latest"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--n", type=int, default=5_000, help="messages of the calibration run, the least per run"
    )
    parser.add_argument(
        "--seconds", type=float, default=2.0, help="the shortest a recorded run may be"
    )
    parser.add_argument("--repeat", type=int, default=3, help="interleaved runs per figure")
    parser.add_argument(
        "--only",
        help="run only the workloads of brokers whose name contains this (nats, redis...), "
        "or only the footprint table (footprint)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    workloads: list[Workload] = [
        *memory.workloads(),
        *nats.workloads(),
        *redis.workloads(),
        *rabbit.workloads(),
        *kafka.workloads(),
        *mqtt.workloads(),
        *outbox.workloads(),
    ]
    if args.only:
        workloads = [w for w in workloads if args.only.lower() in w.broker.lower()]
    run(workloads, n=args.n, repeat=args.repeat, min_seconds=args.seconds)
    figures = [] if args.only and args.only.lower() != "footprint" else footprint.figures()
    footprint.measure(figures, repeat=max(5, args.repeat))
    print(
        report(
            workloads,
            n=args.n,
            repeat=args.repeat,
            min_seconds=args.seconds,
            out=RESULTS,
            footprint=figures,
        )
    )


if __name__ == "__main__":
    main()
