"""Nothing silent at the boundary (SPEC 5): what the production's own tools do to the
stream and the group (trim it, acknowledge our entries, move the group) is counted once
or reported as lost with its cause, against a real redis-server and the real `p35 run`."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from decision_intel import keys
from tests.helpers import GROUP, STREAM, Daemon, RawRedis, group_info, run_p35, wait_for

pytestmark = pytest.mark.e2e


def produce(r: RawRedis, n: int, start: int = 0, **xadd: object) -> list[bytes]:
    """Entries shaped like the Apply Layer's: a unique plan_id and timestamp on each."""
    pipe = r.pipeline(transaction=False)
    for i in range(start, start + n):
        fields = {
            "plan_id": f"p{i:07d}",
            "symbol": ("BTCUSDT", "ETHUSDT", "SOLUSDT")[i % 3],
            "decision": ("SKIP", "BLOCKED", "EXECUTE")[i % 3],
            "executed": "True" if i % 3 == 2 else "False",
            "error": ("no_position", "kill_score_critical", "")[i % 3],
            "timestamp": str(1769929091 + i),
        }
        pipe.xadd(STREAM, fields, **xadd)
    return list(pipe.execute())


def status(r: RawRedis) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in r.hgetall(keys.STATUS).items()}


def stat(r: RawRedis, field: str) -> int:
    return int(status(r).get(field) or 0)


def bucket_total(r: RawRedis) -> int:
    total = 0
    for key in r.scan_iter(f"{keys.PREFIX}:bucket:*"):
        total += sum(int(v) for f, v in r.hgetall(key).items() if f.startswith(b"decision:"))
    return total


def settled(r: RawRedis) -> bool:
    """Everything delivered is acknowledged and the audit has had a complete turn."""
    g = group_info(r)
    return bool(g) and g["pending"] == 0 and status(r).get("lost_exact") == "1"


def alerts(r: RawRedis, kind: str) -> list[dict[str, str]]:
    return [
        {k.decode(): v.decode() for k, v in f.items()}
        for _, f in r.xrange(keys.ALERTS)
        if f[b"type"] == kind.encode()
    ]


def completeness_line(env: dict[str, str], *args: str) -> str:
    out = run_p35(env, "check", *args)
    [line] = [x for x in out.stdout.splitlines() if " completeness: " in x]
    return line


def events(d: Daemon, name: str) -> list[dict[str, object]]:
    return [e for e in d.events() if e.get("event") == name]


def logged(d: Daemon, name: str, n: int | None = None) -> list[dict[str, object]]:
    """The daemon's `name` events once it has logged them (entries.lost: `n` in all):
    the log line follows the status the audit script wrote."""

    def done() -> bool:
        found = events(d, name)
        return bool(found) if n is None else sum(int(str(e["count"])) for e in found) >= n

    wait_for(done, 30, f"{name} logged")
    return events(d, name)


def start(env: dict[str, str], tmp_path: Path, daemons: list[Daemon], name: str) -> Daemon:
    """A `p35 run`, once it is ready: its signal handlers are set (a SIGTERM before then
    kills it) and it holds its name."""
    d = Daemon(env, tmp_path / f"{name}.log").start()
    daemons.append(d)
    wait_for(lambda: bool(events(d, "service.ready")) or not d.alive, 60, f"{name} ready")
    return d


def run_until_counted(
    r: RawRedis, env: dict[str, str], tmp_path: Path, daemons: list[Daemon], n: int
) -> Daemon:
    d = start(env, tmp_path, daemons, f"first-{n}")
    wait_for(lambda: stat(r, "processed_total") >= n and settled(r), 60, f"{n} counted")
    return d


@pytest.mark.parametrize("approximate", [True, False], ids=["maxlen~", "maxlen="])
def test_entries_trimmed_while_p35_is_down_are_reported_exactly(
    r: RawRedis,
    base_env: dict[str, str],
    daemons: list[Daemon],
    tmp_path: Path,
    approximate: bool,
) -> None:
    """A producer writing with MAXLEN while p35 is stopped longer than the stream holds:
    what remained is counted once, what was trimmed unread is `lost_trimmed`, exactly."""
    produce(r, 300)
    first = run_until_counted(r, base_env, tmp_path, daemons, 300)
    assert first.terminate_and_wait()[0] == 0
    ids = produce(r, 3000, start=300, maxlen=1000, approximate=approximate)
    remaining = len(r.xrange(STREAM, min=ids[0]))
    trimmed = 3000 - remaining
    assert trimmed > 1500  # the stream held less than what came while p35 was down
    d = start(base_env, tmp_path, daemons, "after")
    wait_for(lambda: stat(r, "lost_total") >= trimmed and settled(r), 60, "the loss reported")
    s = status(r)
    assert int(s["processed_total"]) == 300 + remaining == bucket_total(r)
    assert int(s["lost_trimmed"]) == trimmed == int(s["lost_total"])
    assert int(s.get("lost_acked_elsewhere") or 0) == int(s.get("lost_skipped") or 0) == 0
    lost = logged(d, "entries.lost", trimmed)
    assert [(e["cause"], e["count"], e["exact"]) for e in lost] == [("trimmed", trimmed, True)]
    rows = r.xrange(keys.LOSSES)
    assert [(f[b"cause"], int(f[b"count"])) for _, f in rows] == [(b"trimmed", trimmed)]
    [alert] = alerts(r, "entries_lost")
    assert (alert["subject"], alert["severity"], alert["count"]) == (
        "trimmed",
        "HIGH",
        str(trimmed),
    )
    # The stream holds seconds of traffic: p35 down that long loses entries.
    wait_for(lambda: alerts(r, "headroom_low") != [], 30, "the headroom alert")
    assert alerts(r, "headroom_low")[0]["severity"] == "HIGH"
    # p35 check fails on it, naming it, until the operator acknowledges it.
    line = completeness_line(base_env)
    assert line.startswith("FAIL") and f"lost {trimmed:,} entries" in line, line
    assert f"trimmed {trimmed:,}" in line, line
    line = completeness_line(base_env, "--ack-losses")
    assert line.startswith("ok") and "acknowledgement" in line, line
    wait_for(
        lambda: any(a["state"] == "resolved" for a in alerts(r, "entries_lost")),
        30,
        "the loss alert resolved once acknowledged",
    )
    assert r.xlen(keys.LOSSES) == 1  # the history stays
    # The views whose windows the loss falls in say so.
    why = run_p35(base_env, "why", "--window", "15m", "--json")
    doc = json.loads(why.stdout)
    assert doc["incomplete"]["lost"] == trimmed, doc["incomplete"]
    assert doc["incomplete"]["causes"] == {"trimmed": trimmed}
    assert f"Incomplete: {trimmed:,} entries trimmed from the stream" in doc["text"]
    # And the day's rollup: p35 report says the day's figures are short by them.
    rep = json.loads(run_p35(base_env, "report", "--json").stdout)
    assert rep["lost"] == {"total": trimmed, "causes": {"trimmed": trimmed}}
    text = run_p35(base_env, "report").stdout
    assert f"incomplete: {trimmed:,} entries of this day were never counted" in text
    assert d.terminate_and_wait()[0] == 0


def test_a_guard_acknowledging_our_pending_entries_is_reported_and_never_removed(
    r: RawRedis, base_env: dict[str, str], daemons: list[Daemon], tmp_path: Path
) -> None:
    """The deadlock guard XAUTOCLAIMs a dead p35 consumer's idle entries into its own
    consumer and XACKs them: `acked_elsewhere`, the guard named, never deleted."""
    produce(r, 200)
    first = run_until_counted(r, base_env, tmp_path, daemons, 200)
    assert first.terminate_and_wait()[0] == 0
    produce(r, 800, start=200)
    # A p35 daemon read 500 and died before counting them (its name is p35's).
    r.sadd(keys.CONSUMERS, "p35-dead")
    r.xreadgroup(GROUP, "p35-dead", {STREAM: ">"}, count=500)
    _, claimed, _ = r.xautoclaim(STREAM, GROUP, "dag4_deadlock_guard", 0, count=1000)
    assert len(claimed) == 500
    r.xack(STREAM, GROUP, *[entry_id for entry_id, _ in claimed])
    d = start(base_env, tmp_path, daemons, "after")
    wait_for(lambda: stat(r, "lost_total") >= 500 and settled(r), 60, "the loss reported")
    s = status(r)
    assert int(s["processed_total"]) == 500 == bucket_total(r)  # 200 before, 300 unread
    assert int(s["lost_acked_elsewhere"]) == 500 == int(s["lost_total"])
    assert s["foreign_consumers"] == "1"
    foreign = logged(d, "consumer.foreign")
    assert [e["name"] for e in foreign] == ["dag4_deadlock_guard"]
    [alert] = alerts(r, "foreign_consumer")
    assert (alert["subject"], alert["severity"]) == ("dag4_deadlock_guard", "MEDIUM")
    assert [a["subject"] for a in alerts(r, "entries_lost")] == ["acked_elsewhere"]
    line = completeness_line(base_env)
    assert line.startswith("FAIL") and "acked_elsewhere 500" in line, line
    # p35 removes its own departed consumers, never another client's.
    wait_for(
        lambda: (
            {c["name"] for c in r.xinfo_consumers(STREAM, GROUP)} >= {b"dag4_deadlock_guard"}
            and b"p35-dead" not in {c["name"] for c in r.xinfo_consumers(STREAM, GROUP)}
        ),
        60,
        "the dead p35 consumer removed",
    )
    assert d.terminate_and_wait()[0] == 0


@pytest.mark.parametrize("where", ["0", "middle"])
def test_moving_the_group_back_counts_nothing_twice_with_two_consumers(
    r: RawRedis, base_env: dict[str, str], daemons: list[Daemon], tmp_path: Path, where: str
) -> None:
    """XGROUP SETID back (to 0, or to a middle ID) under two running consumers: every
    entry delivered again is acknowledged as a replay, none is counted twice."""
    env = {**base_env, "P35_BATCH_SIZE": "100"}
    ids = produce(r, 2000)
    a = start(env, tmp_path, daemons, "a")
    b = start(env, tmp_path, daemons, "b")
    wait_for(lambda: stat(r, "processed_total") >= 2000 and settled(r), 60, "2000 counted")
    before = bucket_total(r)
    target = "0" if where == "0" else ids[999].decode()
    again = 2000 if where == "0" else 1000
    r.xgroup_setid(STREAM, GROUP, target)
    wait_for(lambda: stat(r, "replayed_total") >= again and settled(r), 60, "the replays")
    produce(r, 500, start=2000)
    wait_for(lambda: stat(r, "processed_total") >= 2500 and settled(r), 60, "500 more counted")
    s = status(r)
    assert int(s["processed_total"]) == 2500 == bucket_total(r) == before + 500
    assert int(s["replayed_total"]) == again
    assert int(s.get("lost_total") or 0) == 0

    def said() -> int:
        found = events(a, "group.replayed") + events(b, "group.replayed")
        return sum(int(str(e["count"])) for e in found)

    wait_for(lambda: said() >= again, 30, "the replays logged")
    assert said() == again
    for d in (a, b):
        assert d.terminate_and_wait()[0] == 0


def test_moving_the_group_forward_reports_what_it_skipped(
    r: RawRedis, base_env: dict[str, str], daemons: list[Daemon], tmp_path: Path
) -> None:
    """XGROUP SETID to `$` with 3,000 unread: `lost_skipped` 3,000; the check's data says so."""
    produce(r, 100)
    first = run_until_counted(r, base_env, tmp_path, daemons, 100)
    assert first.terminate_and_wait()[0] == 0
    ids = produce(r, 3000, start=100)
    r.xgroup_setid(STREAM, GROUP, "$")
    d = start(base_env, tmp_path, daemons, "after")
    wait_for(lambda: stat(r, "lost_total") >= 3000 and settled(r), 60, "the loss reported")
    s = status(r)
    assert int(s["processed_total"]) == 100 == bucket_total(r)
    assert int(s["lost_skipped"]) == 3000 == int(s["lost_total"])
    # One warning per audit turn that found some (a turn walks a bounded number).
    lost = logged(d, "entries.lost", 3000)
    assert {e["cause"] for e in lost} == {"skipped"}
    assert sum(int(str(e["count"])) for e in lost) == 3000
    assert (lost[0]["first_id"], lost[-1]["last_id"]) == (ids[0].decode(), ids[-1].decode())
    # Delivered again (moved back over the skipped range), they are not counted now either.
    r.xgroup_setid(STREAM, GROUP, ids[0].decode())
    wait_for(lambda: stat(r, "replayed_total") >= 2999 and settled(r), 60, "the replays")
    assert stat(r, "processed_total") == 100
    assert d.terminate_and_wait()[0] == 0


def test_unread_entries_deleted_and_a_consumer_deleted_with_entries_are_reported(
    r: RawRedis, base_env: dict[str, str], daemons: list[Daemon], tmp_path: Path
) -> None:
    """XDEL of unread entries is `trimmed`; XGROUP DELCONSUMER of a p35 consumer holding
    entries is `acked_elsewhere`; the rest is counted once."""
    produce(r, 100)
    first = run_until_counted(r, base_env, tmp_path, daemons, 100)
    assert first.terminate_and_wait()[0] == 0
    ids = produce(r, 1000, start=100)
    r.xdel(STREAM, *ids[:50])
    r.sadd(keys.CONSUMERS, "p35-gone")
    r.xreadgroup(GROUP, "p35-gone", {STREAM: ">"}, count=200)
    r.xgroup_delconsumer(STREAM, GROUP, "p35-gone")
    d = start(base_env, tmp_path, daemons, "after")
    wait_for(lambda: stat(r, "lost_total") >= 250 and settled(r), 60, "the loss reported")
    s = status(r)
    assert int(s["processed_total"]) == 100 + 750 == bucket_total(r)
    assert int(s["lost_trimmed"]) == 50
    assert int(s["lost_acked_elsewhere"]) == 200
    assert int(s["lost_total"]) == 250
    assert d.terminate_and_wait()[0] == 0


def test_sigkill_while_the_group_moves_back_counts_nothing_twice(
    r: RawRedis, base_env: dict[str, str], daemons: list[Daemon], tmp_path: Path
) -> None:
    """Replays under kill -9: the daemon killed mid-replay, restarted: still no double."""
    env = {**base_env, "P35_BATCH_SIZE": "50"}
    produce(r, 3000)
    d = start(env, tmp_path, daemons, "a")
    wait_for(lambda: stat(r, "processed_total") >= 3000 and settled(r), 60, "3000 counted")
    for i in range(3):
        r.xgroup_setid(STREAM, GROUP, "0")
        wait_for(lambda: stat(r, "replayed_total") > 0, 30, "a replay")
        d.signal(signal.SIGKILL)
        d.wait(10)
        d = start(env, tmp_path, daemons, f"again{i}")
    wait_for(lambda: group_info(r).get("lag") == 0 and settled(r), 60, "drained")
    assert stat(r, "processed_total") == 3000 == bucket_total(r)
    assert stat(r, "lost_total") == 0
    assert d.terminate_and_wait()[0] == 0
    assert json.dumps(status(r))  # the status stays readable


def test_kill_9_while_a_producer_trims_loses_nothing_silently(
    r: RawRedis, base_env: dict[str, str], daemons: list[Daemon], tmp_path: Path
) -> None:
    """A producer writing with MAXLEN ~ 2000 faster than a daemon that is killed -9 three
    times: at the end every entry written is counted once or reported trimmed, exactly."""
    import random
    import threading
    import time

    env = {**base_env, "P35_BATCH_SIZE": "100"}
    total = 30_000
    done = threading.Event()

    def write() -> None:
        w = RawRedis(port=r.connection_pool.connection_kwargs["port"])
        for start in range(0, total, 500):
            produce(w, 500, start=start, maxlen=2000, approximate=True)
            time.sleep(0.05)  # about 10,000 entries/s: the kills land while it writes
        done.set()

    r.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    d = start(env, tmp_path, daemons, "k0")
    wait_for(lambda: status(r).get("lost_exact") is not None, 30, "the ledger begun")
    writer = threading.Thread(target=write)
    writer.start()
    rng = random.Random()
    for i in range(3):
        before = stat(r, "processed_total")

        def more_counted(b: int = before) -> bool:
            return stat(r, "processed_total") > b + 300

        wait_for(more_counted, 60, "more counted")
        wait_for(lambda: rng.random() < 0.2, 1, "a random moment", every=0.01)
        d.signal(signal.SIGKILL)
        d.wait(10)
        d = start(env, tmp_path, daemons, f"k{i + 1}")
    writer.join(120)
    assert done.is_set()
    wait_for(
        lambda: stat(r, "processed_total") + stat(r, "lost_total") >= total and settled(r),
        90,
        "every entry counted or reported",
    )
    s = status(r)
    assert int(s["processed_total"]) == bucket_total(r)
    assert int(s["processed_total"]) + int(s["lost_total"]) == total, s
    assert int(s["lost_trimmed"]) == int(s["lost_total"]) > 0, s
    assert d.terminate_and_wait()[0] == 0


def test_thousands_of_ghost_consumers_are_counted_not_listed(
    r: RawRedis, base_env: dict[str, str], daemons: list[Daemon], tmp_path: Path
) -> None:
    """1,500 consumers made by another client with XGROUP CREATECONSUMER: the audit counts
    them from the group (no XINFO CONSUMERS of them at each turn), one `others` alert."""
    produce(r, 10)
    r.xgroup_create(STREAM, GROUP, id="0")
    pipe = r.pipeline(transaction=False)
    for i in range(1500):
        pipe.xgroup_createconsumer(STREAM, GROUP, f"ghost-{i}")
    pipe.execute()
    d = start(base_env, tmp_path, daemons, "d")
    wait_for(lambda: status(r).get("foreign_consumers") == "1500", 30, "the ghosts counted")
    wait_for(lambda: alerts(r, "foreign_consumer") != [], 30, "the alert")
    [alert] = alerts(r, "foreign_consumer")
    assert (alert["subject"], alert["count"]) == ("others", "1500")
    assert len(r.xinfo_consumers(STREAM, GROUP)) == 1501  # none removed
    assert d.terminate_and_wait()[0] == 0
