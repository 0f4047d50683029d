"""``make bench``: run the workloads and write bench/results/latest.{md,json}.

python -m bench.run [--n 20000] [--repeat 3] [--only nats]
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from bench import memory, nats, rabbit, redis
from bench.harness import Workload, report, run

RESULTS = Path(__file__).parent / "results" / "latest"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=20_000, help="messages per run")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved runs per figure")
    parser.add_argument(
        "--only", help="run only the workloads of brokers whose name contains this (nats, redis...)"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    workloads: list[Workload] = [
        *memory.workloads(),
        *nats.workloads(),
        *redis.workloads(),
        *rabbit.workloads(),
    ]
    if args.only:
        workloads = [w for w in workloads if args.only.lower() in w.broker.lower()]
    run(workloads, n=args.n, repeat=args.repeat)
    print(report(workloads, n=args.n, repeat=args.repeat, out=RESULTS))


if __name__ == "__main__":
    main()
