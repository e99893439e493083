#!/usr/bin/env python3
"""Write realistic apply.result traffic to a Redis stream (decision_intel.devtools.producers).

  demo_traffic.py --url redis://127.0.0.1:6379/0 --backlog 20000 --minutes 60
  demo_traffic.py --url ... --rate 200 --seconds 10      # a live trickle

For demos and benchmarks only: never point it at a production Redis.
"""

from __future__ import annotations

import argparse
import random

import redis

from decision_intel.devtools.producers import STREAM, write_backlog, write_live


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--url", default="redis://127.0.0.1:6379/0")
    p.add_argument("--stream", default=STREAM)
    p.add_argument("--backlog", type=int, default=0, help="entries to place in the past")
    p.add_argument("--minutes", type=int, default=60, help="how far back the backlog reaches")
    p.add_argument("--rate", type=float, default=0, help="live entries per second")
    p.add_argument("--seconds", type=float, default=0, help="how long to write live entries")
    p.add_argument("--seed", type=int, default=35)
    args = p.parse_args()
    rng = random.Random(args.seed)
    r = redis.Redis.from_url(args.url)
    if args.backlog:
        write_backlog(r, rng, args.backlog, args.minutes, args.stream)
    if args.rate and args.seconds:
        write_live(r, rng, args.rate, args.seconds, args.stream)


if __name__ == "__main__":
    main()
