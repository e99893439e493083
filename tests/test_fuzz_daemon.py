"""SPEC 5 "never crashes on input": 10,000 random entries through the real daemon.

Random field names and values, binary, 1 MB values, entries with thousands of
fields, broken JSON envelopes, mixed with producer-like entries. The daemon must
stay up, acknowledge and count every entry under the decision the SPEC reference
gives it (UNKNOWN/oversize past the entry limits), and keep the invalid stream capped.
"""

from __future__ import annotations

import json
import os
import random
from collections import Counter
from pathlib import Path

import pytest

from tests.helpers import Daemon, RawRedis, drained, wait_for
from tests.spec_reference import reference
from tests.traffic import STREAM, minute_label

pytestmark = pytest.mark.e2e

N = 40_000 if os.environ.get("CHAOS") else 10_000
WORDS = ["decision", "executed", "error", "reason", "symbol", "payload", "details"]


def junk(rng: random.Random, size: int) -> bytes:
    return bytes(rng.getrandbits(8) for _ in range(size))


def random_value(rng: random.Random) -> bytes:
    roll = rng.random()
    if roll < 0.3:
        return rng.choice(
            [
                b"EXECUTE",
                b"skip",
                b" Denied ",
                b"unknown",
                b"",
                b"True",
                b"0",
                b"risk_paused:dd 7%",
                b"none",
                b"BTCUSDT",
                b"maybe",
            ]
        )
    if roll < 0.5:
        inner = {rng.choice(WORDS): rng.choice([None, 1, True, "SKIP", "no_position", {"x": 1}])}
        text = json.dumps(inner).encode()
        return text if rng.random() < 0.7 else text[: rng.randint(0, len(text))]  # cut short
    if roll < 0.7:
        return junk(rng, rng.randint(0, 40))
    return "".join(chr(rng.randint(1, 0x2FFF)) for _ in range(rng.randint(0, 30))).encode()


def random_entry(rng: random.Random, i: int) -> dict[bytes, bytes]:
    if i % 2000 == 7:
        return {b"error": b"x" * (1 << 20), b"symbol": b"ETHUSDT", b"executed": b"false"}
    if i % 2000 == 11:
        return {f"f{k}".encode(): junk(rng, 4) for k in range(3000)} | {b"decision": b"SKIP"}
    entry = {}
    for _ in range(rng.randint(1, 8)):
        name = rng.choice(WORDS).encode() if rng.random() < 0.7 else junk(rng, rng.randint(1, 12))
        entry[name] = random_value(rng)
    return entry


def test_ten_thousand_hostile_entries_are_all_acked_and_counted(
    r: RawRedis, base_env: dict[str, str], daemons: list[Daemon], tmp_path: Path
) -> None:
    rng = random.Random(20261121)
    sec, _ = r.time()
    start_ms = sec * 1000 - N * 200 - 60_000  # every ID in the past (none beyond the skew)
    want: dict[str, Counter[str]] = {}
    unknown = 0
    pipe = r.pipeline(transaction=False)
    for i in range(N):
        entry = random_entry(rng, i)
        entry_id = f"{start_ms + i * 200}-0"  # 300 per minute over about 33 minutes
        pipe.xadd(STREAM, entry, id=entry_id)
        oversize = len(entry) > 256 or sum(map(len, entry.values())) > 65_536
        decision = "UNKNOWN" if oversize else reference(entry)[0]  # P35_MAX_ENTRY_*
        unknown += decision == "UNKNOWN"
        bucket = f"quantum:p35:bucket:{minute_label((start_ms + i * 200) // 60_000)}"
        want.setdefault(bucket, Counter())[f"decision:{decision}"] += 1
        if len(pipe) >= 500:
            pipe.execute()
    pipe.execute()

    d = Daemon({**base_env, "P35_INVALID_MAXLEN": "200"}, tmp_path / "d.log").start()
    daemons.append(d)
    wait_for(lambda: drained(r, N), 120, "every entry acknowledged and counted")
    assert d.alive, d.output()
    assert d.terminate_and_wait()[0] == 0
    for bucket, decisions in want.items():
        fields = {k.decode(): int(v) for k, v in r.hgetall(bucket).items()}
        got = Counter({k: v for k, v in fields.items() if k.startswith("decision:")})
        assert got == decisions, bucket
        assert sum(v for k, v in fields.items() if k.startswith("reason:")) == got.total()
        assert len(fields) <= 5 + 200 + 2 * 500 * 205  # bounded whatever was written
    status = r.hgetall("quantum:p35:status")
    assert int(status[b"processed_total"]) == N
    assert int(status[b"invalid_total"]) == unknown > 0
    assert r.xlen("quantum:p35:invalid") <= 200 + 100  # MAXLEN ~ trims whole nodes of 100
    assert not any(e.get("level") in ("error", "critical") for e in d.events())
    print(f"FIGURES entries={N} unknown={unknown} invalid_len={r.xlen('quantum:p35:invalid')}")
