"""What counting costs a delivered message: the metrics calls of one message, with metrics on against off.

    .venv/bin/python bench/metrics_cost.py [--messages 200000] [--rounds 7]

`send_bench.py` with and without `--metrics-off` prices observing end to end, but on a shared 2-core
machine the difference drowns in the noise of a run. This measures the part that runs per message on
its own, in one process and in the same run: for each message, what the server does for it with
metrics on (`accepted` when it is stored, `recorded` when its attempt is written, and its share of the
REST call that carried it in a batch of 50), against the same calls on a `ProcessMetrics` that is off.
The answer is CPU microseconds per message (median over rounds, on and off interleaved); set it beside
`send_bench.py`'s `srv us/msg` for the share of the server's work. What a scrape costs is not in it:
`send_bench.py` reads every process's /metrics every 15 s (`--scrape-seconds`) and prints how long a
read took.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence

from messageservice.delivery.decision import Done, Retry
from messageservice.delivery.jobs import Job, Result
from messageservice.delivery.retry import Outcome, Verdict
from messageservice.observability.metrics import ProcessMetrics

SENDERS = [f"app{n}|sms" for n in range(5)]
HANDLERS = [f"http://127.0.0.1:{9000 + n}/h?token={n}" for n in range(5)]
BATCH = 50  # messages per batch request, as send_bench sends them


def one_message_each(metrics: ProcessMetrics, count: int) -> float:
    """CPU seconds for `count` messages' worth of metrics calls (the work around them is prebuilt)."""
    ok = Outcome(Verdict.DELIVERED, 200, None, "OK")
    failed = Outcome(Verdict.RETRY, 503, None, "busy")
    results = []
    for n in range(count):
        job = Job(key=n, app_id=1, attempt=1, queued_at=0.0, url=HANDLERS[n % len(HANDLERS)], body="")
        results.append(Result(job, failed if n % 20 == 0 else ok, 0.0, 12.5))
    decisions = {r.job.key: (Retry(0.0, "busy") if r.outcome is failed else Done()) for r in results}
    started = time.process_time()
    for n, result in enumerate(results):
        metrics.accepted(SENDERS[n % len(SENDERS)])
        metrics.recorded("handler", (result,), decisions)
        if n % BATCH == 0:
            metrics.rest_call("batch", 200, 0.004)
    return time.process_time() - started


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    on, off = ProcessMetrics(enabled=True), ProcessMetrics(enabled=False)
    one_message_each(on, 1000)  # label children made once, as in a running server
    timings: dict[str, list[float]] = {"on": [], "off": []}
    for round_no in range(args.rounds):
        order = [("on", on), ("off", off)] if round_no % 2 == 0 else [("off", off), ("on", on)]
        for name, metrics in order:
            timings[name].append(one_message_each(metrics, args.messages) / args.messages * 1e6)
    on_us, off_us = statistics.median(timings["on"]), statistics.median(timings["off"])
    print(f"metrics calls per delivered message, median of {args.rounds} rounds of {args.messages:,}:")
    print(f"  on  {on_us:6.2f} us  (rounds {', '.join(f'{t:.2f}' for t in timings['on'])})")
    print(f"  off {off_us:6.2f} us  (rounds {', '.join(f'{t:.2f}' for t in timings['off'])})")
    print(f"  cost of counting: {on_us - off_us:.2f} us of CPU per message")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
