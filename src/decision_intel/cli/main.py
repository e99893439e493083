"""`p35`: the command line. Thin: builds settings and logging, then hands over."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from decision_intel import __version__, keys
from decision_intel.daemon.notify import Notifier
from decision_intel.model.alerts import GATE_SHARE_MIN
from decision_intel.settings import ConfigError, Settings, load, unknown_variables
from decision_intel.text import describe, number, percent, safe, safe_map, share, utc

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from decision_intel.store.reads import WindowSnapshot

T = TypeVar("T")


def _config_error(message: str) -> NoReturn:
    """One line naming the problem, then exit 78. Under systemd (stderr is the journal)
    the line carries the error priority, so `journalctl -p err` shows it."""
    from decision_intel.daemon import logs

    prefix = "<3>" if logs.detect_mode(os.environ, sys.stderr) == "journal" else ""
    print(f"{prefix}p35: {message}", file=sys.stderr, flush=True)
    raise SystemExit(os.EX_CONFIG)


def _settings(**overrides: object) -> Settings:
    try:
        return load(**{k: v for k, v in overrides.items() if v is not None})
    except ConfigError as exc:
        _config_error(str(exc))


def cmd_run(args: argparse.Namespace) -> int:
    # structlog imports rich, when it is installed, to draw tracebacks. `p35 top` needs
    # rich; the daemon draws none, and rich would be 5 of its 48 MB: kept out.
    sys.modules.setdefault("rich", None)  # type: ignore[arg-type]
    from decision_intel.daemon import logs
    from decision_intel.daemon.service import Service

    settings = _settings(consumer=args.consumer)
    logs.configure(settings.log_level, logs.detect_mode(os.environ, sys.stdout), settings.secrets)
    log = logs.get()
    unknown = unknown_variables(os.environ)
    if unknown:
        log.warning("settings.unknown_variables", names=unknown, hint="typo? these are ignored")
    service = Service(settings, log, Notifier(os.environ.get("NOTIFY_SOCKET")))
    return asyncio.run(service.serve())


def _query(settings: Settings, read: Callable[[Any], Awaitable[T]]) -> T:
    """Run one read against Redis with a client of its own, closed afterwards."""
    from decision_intel.store.client import connect

    async def go() -> T:
        client = connect(settings)
        try:
            return await read(client)
        finally:
            await client.aclose()

    return asyncio.run(go())


@dataclass(frozen=True)
class StatusRead:
    """What `p35 status` shows: the status hash and each window's snapshot."""

    status: dict[str, str]
    windows: dict[str, WindowSnapshot]
    now_s: float
    """Redis's clock, the one the heartbeat is dated by."""

    def to_json(self) -> dict[str, object]:
        """`p35 status --json` (without the clock)."""
        windows = {
            w: {"decisions": snap.decisions, "top_reasons": snap.reasons}
            for w, snap in self.windows.items()
        }
        return {"status": self.status, "windows": windows}


async def _status(client: aioredis.Redis) -> StatusRead:
    from decision_intel.store.reads import read_window, redis_now_s

    raw = await client.hgetall(keys.STATUS)
    now_s = await redis_now_s(client)  # the clock the heartbeat is dated by
    windows = {
        window: await read_window(client, keys.decision_counts(window), keys.reason_top(window), 10)
        for window in keys.WINDOWS
    }
    return StatusRead(safe_map(raw), windows, now_s)


def cmd_status(args: argparse.Namespace) -> int:
    """Print the status heartbeat and the window snapshots; exit 1 when there is no status."""
    from decision_intel.model.diagnose import status_age

    settings = _settings()
    data = _query(settings, _status)
    if args.json:
        print(json.dumps(data.to_json(), indent=2, sort_keys=True))
        return 0 if data.status else 1
    status = data.status
    if not status:
        print("no status: the service has never run against this Redis")
        return 1
    last_ts = number(status.get("last_ts"))
    age = status_age(None if last_ts is None else data.now_s - last_ts)
    print(f"status ({age}, written by {status.get('consumer_name', '?')}):")
    for name in sorted(status):
        print(f"  {name:18} {status[name]}")
    for window, snap in data.windows.items():
        total = sum(snap.decisions.values())
        if not total:
            print(f"\n{window}: no decisions in this window")
            continue
        mix = ", ".join(
            f"{d} {n} ({percent(share(n, total))})" for d, n in sorted(snap.decisions.items())
        )
        print(f"\n{window}: {total} decisions: {mix}")
        for reason, n in snap.reasons[:5]:
            print(f"  {n:8}  {reason}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """Health as seen from Redis; exit 1 listing each failed check, 2 when Redis is unreachable."""
    from redis.exceptions import RedisError

    from decision_intel.cli.check import ANSWER_WITHIN_S, acknowledge_losses, run_checks

    settings = _settings()
    max_age_s = settings.stale_after().status_s if args.max_age is None else args.max_age
    if args.ack_losses:
        acked_ms = _query(settings, acknowledge_losses)
        when = utc(acked_ms / 1000, "%Y-%m-%d %H:%M:%SZ")
        print(f"losses and foreign consumers acknowledged as of {when}")

    async def read(client: Any) -> list[Any]:
        async with asyncio.timeout(ANSWER_WITHIN_S):
            return list(
                await run_checks(
                    settings, client, max_age_s=max_age_s, max_pending=args.max_pending
                )
            )

    try:
        checks = _query(settings, read)
    except TimeoutError:
        print(f"FAIL redis: no answer from {settings.redacted_url} within {ANSWER_WITHIN_S:g} s")
        return 2
    except (RedisError, OSError) as exc:
        print(f"FAIL redis: cannot reach {settings.redacted_url}: {describe(exc)}")
        return 2
    failed = 0
    for c in checks:
        print(f"{'ok  ' if c.ok else 'FAIL'} {c.name}: {c.detail}")
        failed += not c.ok
    return 1 if failed else 0


def cmd_alerts(args: argparse.Namespace) -> int:
    """List recent alert events, newest first."""
    from decision_intel.daemon.alert_store import recent

    events = _query(_settings(), lambda client: recent(client, args.count))
    if args.json:
        print(json.dumps(events, indent=2, sort_keys=True))
        return 0
    if not events:
        print("no alerts in quantum:p35:alerts")
        return 0
    for e in events:
        when = utc(e.get("timestamp"), "%Y-%m-%d %H:%M:%SZ")
        fraction = number(e.get("share"))
        part = "" if fraction is None else f"{percent(fraction)} of {e.get('total', '?')}"
        print(
            f"{when:20}  {e.get('state', ''):8} {e.get('severity', ''):8} "
            f"{e.get('type', ''):14} {e.get('window', ''):3}  {e.get('subject', '')}  {part}"
        )
    return 0


def cmd_dash(args: argparse.Namespace) -> int:
    """Dashboard modes a-e; `d` exits 2 when a gate is over the threshold."""
    from decision_intel.cli import dashboard

    settings = _settings()
    modes = list(dashboard.MODES) if args.mode == "all" else [args.mode]
    try:
        symbols = [_symbol_arg(s) for s in args.args] if args.mode == "b" else []
    except argparse.ArgumentTypeError as exc:
        print(f"p35 dash b: error: {exc}", file=sys.stderr)
        return os.EX_USAGE
    if args.mode == "all" or (args.mode == "b" and not symbols):
        symbols = list(dashboard.DEFAULT_SYMBOLS)
    threshold = GATE_SHARE_MIN
    if args.mode == "d" and args.args:
        try:
            threshold = float(args.args[0])
        except ValueError:
            print(f"p35 dash d: threshold must be a number, got {args.args[0]!r}", file=sys.stderr)
            return os.EX_USAGE
        threshold = threshold / 100 if threshold > 1 else threshold
    data = _query(
        settings,
        lambda client: dashboard.collect(client, settings, args.window, symbols),
    )
    views = dashboard.views(data, modes, threshold)
    if args.json:
        print(json.dumps(views, indent=2, sort_keys=True))
    else:
        print(dashboard.render(views, dashboard.Style(sys.stdout.isatty() and not args.no_color)))
    return 2 if dashboard.drift_found(views) else 0


def cmd_why(args: argparse.Namespace) -> int:
    """Why are we (not) trading: a verdict, its gates and what to do; Nagios exit status
    (0 trading, 1 degraded, 2 not trading, 3 unknown)."""
    from redis.exceptions import RedisError

    from decision_intel.cli.why import why
    from decision_intel.model.diagnose import EXIT_CODES, UNKNOWN

    settings = _settings()
    try:
        doc = _query(settings, lambda client: why(client, settings, args.window, args.symbol))
    except (RedisError, OSError) as exc:
        print(
            f"UNKNOWN — cannot reach Redis at {settings.redacted_url}: {type(exc).__name__}",
            file=sys.stderr,
        )
        return EXIT_CODES[UNKNOWN]
    print(json.dumps(doc, indent=2, sort_keys=True) if args.json else doc["text"])
    return int(doc["exit_code"])


def cmd_top(args: argparse.Namespace) -> int:
    """A live view for a terminal; q quits, w cycles the window."""
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        print(
            "p35 top needs a terminal; for scripts use `p35 dash a` or `p35 why --json`",
            file=sys.stderr,
        )
        return os.EX_USAGE
    if args.interval < 0.2:
        print("p35 top: --interval must be at least 0.2 seconds", file=sys.stderr)
        return os.EX_USAGE
    from decision_intel.cli import top

    settings = _settings()
    return asyncio.run(top.run(settings, args.window, args.interval))


def _day_number(text: str) -> int:
    """Days since the epoch of a UTC `YYYYMMDD`."""
    from datetime import UTC, datetime

    return int(datetime.strptime(text, "%Y%m%d").replace(tzinfo=UTC).timestamp()) // 86_400


def cmd_report(args: argparse.Namespace) -> int:
    """One UTC day's totals against the same weekday a week before."""
    from decision_intel.model import report

    settings = _settings()
    today = int(time.time()) // 86_400
    day = today if args.day is None else args.day

    async def read(client: Any) -> tuple[dict[bytes, bytes], dict[bytes, bytes]]:
        return await client.hgetall(keys.daily(day)), await client.hgetall(keys.daily(day - 7))

    now_fields, before_fields = _query(settings, read)
    before = report.parse_daily(before_fields) if before_fields else None
    rep = report.compare(
        keys.day_label(day),
        keys.day_label(day - 7),
        report.parse_daily(now_fields),
        before,
        partial=day == today,
    )
    print(json.dumps(rep, indent=2, sort_keys=True) if args.json else report.render(rep))
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    """How one stream entry is classified, with the daemon's rules and vocabulary."""
    from decision_intel.model.admission import refusal
    from decision_intel.model.classify import Classifier
    from decision_intel.store import scripts
    from decision_intel.store.reads import measured_entry

    settings = _settings()

    async def read(client: Any) -> Any:
        # Measured in Redis (lua/entry.lua), as the daemon's reads are: an entry of any
        # size comes back cut down, never as a reply past the byte budget.
        return await scripts.load(client, "entry")(
            args=[
                settings.stream,
                args.entry_id,
                settings.max_entry_fields,
                settings.max_entry_bytes,
            ]
        )

    row = _query(settings, read)
    if not row:
        print(f"p35 explain: no entry {safe(args.entry_id)} in {settings.stream}", file=sys.stderr)
        return 1
    entry_id, fields, size = measured_entry(row)
    refused = refusal(size, settings.max_entry_fields, settings.max_entry_bytes)
    if refused is not None:  # as the daemon counts it, unclassified
        out: dict[str, Any] = {**refused._asdict(), "rule": None, "fields": {}}
    else:
        out = Classifier(settings.vocabulary).explain(fields)
    out = {"id": safe(entry_id), **out}
    if args.json:
        print(json.dumps(out, indent=2, sort_keys=True))
        return 0
    print(f"{out['id']}: {out['decision']}, reason {out['reason']}, symbol {out['symbol'] or '-'}")
    rule = {"decision": "the decision word", "executed": "the executed flag"}.get(
        out["rule"] or "", "no rule could decide"
    )
    print(f"  decided by {rule}" + (f" ({safe(out['cause'])})" if out["cause"] else ""))
    for name, used in out["fields"].items():
        # Quoted, not repr(): safe() has escaped it already, and repr would double
        # each of its backslashes.
        print(f"  {name:9} '{safe(used['value'])}' from {used['layer']}")
    return 0


class _Parser(argparse.ArgumentParser):
    """Usage errors exit 64 (EX_USAGE), not argparse's 2: that is `p35 why`'s "not
    trading" and `p35 dash d`'s "drift found" (a monitor reads 64 as UNKNOWN)."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(os.EX_USAGE, f"{self.prog}: error: {message}\n")


def _symbol_arg(text: str) -> str:
    from decision_intel.model.classify import SYMBOL

    symbol = text.upper()
    if not SYMBOL.fullmatch(symbol):
        raise argparse.ArgumentTypeError(f"not a symbol (2 to 30 letters and digits): {text!r}")
    return symbol


def _entry_id_arg(text: str) -> str:
    parts = text.split("-")
    if not (
        1 <= len(parts) <= 2 and all(p.isascii() and p.isdigit() and int(p) < 2**64 for p in parts)
    ):
        raise argparse.ArgumentTypeError(f"not a stream entry ID (<ms>-<seq>): {text!r}")
    return text


def _day_arg(text: str) -> int:
    try:
        day = _day_number(text)
    except ValueError:
        day = -1
    if day < 0:
        raise argparse.ArgumentTypeError(f"not a UTC day YYYYMMDD from 19700101: {text!r}")
    return day


def _positive(kind: type[int] | type[float]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            value = 0
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be a number above 0: {text!r}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="p35", description="P3.5 Decision Intelligence")
    parser.add_argument("--version", action="version", version=f"p35 {__version__}")
    parser.add_argument(
        "--env-file",
        metavar="PATH",
        help="read settings from this systemd env file first (as the service does)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the daemon (settings from P35_* environment variables)")
    run.add_argument(
        "--consumer", help="consumer name (overrides P35_CONSUMER; systemd templates pass %%i)"
    )
    run.set_defaults(func=cmd_run)
    why = sub.add_parser(
        "why",
        help="why are we not trading: verdict, gates, since when, where, what to do "
        "(exit 0 trading, 1 degraded, 2 not trading, 3 unknown)",
    )
    why.add_argument("--window", choices=["5m", "15m", "1h"], default="5m")
    why.add_argument("--symbol", type=_symbol_arg, help="the same for one symbol")
    why.add_argument("--json", action="store_true", help="machine output (docs/dashboard.md)")
    why.set_defaults(func=cmd_why)
    top = sub.add_parser("top", help="a live view: verdict, mix, gates, symbols, alerts")
    top.add_argument("--window", choices=["5m", "15m", "1h"], default="5m")
    top.add_argument(
        "--interval", type=_positive(float), default=2.0, help="seconds between refreshes"
    )
    top.set_defaults(func=cmd_top)
    status = sub.add_parser("status", help="show the status heartbeat and window snapshots")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=cmd_status)
    check = sub.add_parser("check", help="health checks from Redis; exit 1 when any fails")
    check.add_argument(
        "--max-age",
        type=float,
        help="heartbeat age limit, s (default: the views' limit, 3 x P35_HEARTBEAT_INTERVAL_SEC "
        "and at least 15)",
    )
    check.add_argument("--max-pending", type=int, default=10_000, help="pending entries limit")
    check.add_argument(
        "--ack-losses",
        action="store_true",
        help="record that the losses so far and the foreign consumers now are seen "
        "(the completeness check passes again; the history stays)",
    )
    check.set_defaults(func=cmd_check)
    dash = sub.add_parser(
        "dash",
        help="dashboard: a why-not-trading, b per symbol, c gate share, d drift, e health",
    )
    dash.add_argument("mode", choices=["a", "b", "c", "d", "e", "all"])
    dash.add_argument("args", nargs="*", help="b: symbols (BTCUSDT ETHUSDT); d: threshold (40)")
    dash.add_argument("--window", choices=list(keys.WINDOWS), default="5m")
    dash.add_argument("--json", action="store_true", help="machine output (docs/dashboard.md)")
    dash.add_argument("--no-color", action="store_true", help="no color even on a terminal")
    dash.set_defaults(func=cmd_dash)
    rep = sub.add_parser("report", help="a UTC day's rollup against the same weekday before")
    rep.add_argument("--day", type=_day_arg, help="YYYYMMDD (default: today, UTC)")
    rep.add_argument("--json", action="store_true", help="machine-readable output")
    rep.set_defaults(func=cmd_report)
    explain = sub.add_parser("explain", help="how one stream entry is classified, and why")
    explain.add_argument(
        "entry_id", type=_entry_id_arg, help="the entry's stream ID, e.g. 1769929091000-0"
    )
    explain.add_argument("--json", action="store_true", help="machine-readable output")
    explain.set_defaults(func=cmd_explain)
    alerts = sub.add_parser("alerts", help="list recent alerts (quantum:p35:alerts), newest first")
    alerts.add_argument("-n", "--count", type=_positive(int), default=20, help="how many events")
    alerts.add_argument("--json", action="store_true", help="machine-readable output")
    alerts.set_defaults(func=cmd_alerts)
    return parser


def _load_env_file(path: str) -> None:
    """Settings from a systemd EnvironmentFile, read as systemd reads it (no shell
    expansion), so the CLI sees what the service sees and no secret is put on a command
    line. Its values win over the environment's, as they do for the service."""
    from decision_intel.settings import read_env_file

    try:
        with open(path, encoding="utf-8") as f:
            values = read_env_file(f.read())
    except (OSError, UnicodeDecodeError) as exc:
        _config_error(f"cannot read --env-file {path}: {getattr(exc, 'strerror', None) or exc}")
    os.environ.update(values)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.env_file:
        _load_env_file(args.env_file)
    if args.command == "run":  # the daemon rides out Redis errors itself
        return int(args.func(args))
    from redis.exceptions import RedisError

    try:
        code = int(args.func(args))
        sys.stdout.flush()  # here, not at exit: where a closed pipe can still be told apart
        return code
    except BrokenPipeError:
        # The reader left (`p35 status | head`): nothing is wrong, and the rest has no
        # reader. Exit as a tool killed by SIGPIPE would, and let the final flush go nowhere.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except (RedisError, OSError) as exc:
        # One line for every view; `why` and `check` answer it themselves (a verdict).
        settings = _settings()
        if "WRONGTYPE" in str(exc):  # Redis is up: one of the keys read is not p35's
            return _wrong_type(settings, args)
        print(
            f"p35 {args.command}: Redis at {settings.redacted_url}: {describe(exc)}",
            file=sys.stderr,
        )
        return os.EX_UNAVAILABLE


def _view_keys(settings: Settings, args: argparse.Namespace) -> dict[str, str]:
    """The keys the views read, each with the type p35 writes there."""
    from decision_intel.cli.dashboard import DEFAULT_SYMBOLS

    want = {settings.stream: "stream", keys.STATUS: "hash", keys.ALERTS: "stream"}
    symbols = {*DEFAULT_SYMBOLS, *(a.upper() for a in getattr(args, "args", []) or [])}
    for window in keys.WINDOWS:
        want[keys.decision_counts(window)] = "hash"
        want[keys.reason_top(window)] = "zset"
        want[keys.symbols_in(window)] = "set"
        for symbol in symbols:
            want[keys.symbol_decision_counts(symbol, window)] = "hash"
            want[keys.symbol_reason_top(symbol, window)] = "zset"
    day = getattr(args, "day", None)
    day = int(time.time()) // 86_400 if day is None else day
    want[keys.daily(day)] = want[keys.daily(day - 7)] = "hash"
    return want


def _wrong_type(settings: Settings, args: argparse.Namespace) -> int:
    """A WRONGTYPE names no key: find the key a view read that holds another type, and
    name it (exit 1, as for other data a view cannot use), rather than blame Redis."""
    from decision_intel.store.group import wrong_types

    want = _view_keys(settings, args)
    wrong = _query(settings, lambda client: wrong_types(client, want))
    named = "; ".join(wrong[:5]) if wrong else "a key it read holds another type"
    fix = (
        "P35_STREAM must name the producers' stream"
        if any(w.startswith(f"{safe(settings.stream)} is a ") for w in wrong)
        else "written by hand or by another program: DEL it and the service makes it again"
    )
    print(f"p35 {args.command}: {named} ({fix})", file=sys.stderr)
    return 1
