"""Least privilege, TLS and secrets, with the real daemon and a real redis-server.

The ACL comes from docs/security.md itself, so the documented line is the tested one.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from decision_intel.devtools.testing import RedisServer, free_port
from tests.helpers import GROUP, Daemon, RawRedis, drained, run_p35, wait_for
from tests.traffic import STREAM, assert_exact, load

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "s3cret-P4ss-7d1e"


def documented_acl() -> str:
    """The ACL rules of docs/security.md (after `ACL SETUSER p35`), with the test password."""
    text = (ROOT / "docs/security.md").read_text()
    [line] = re.findall(r"```acl\n(ACL SETUSER p35 .*)\n```", text)
    return line.removeprefix("ACL SETUSER p35 ").replace(">CHANGE-ME", f">{PASSWORD}")


def secure_server(tmp: Path, rules: str) -> RedisServer:
    """A redis-server whose user `p35` is defined on its command line (kept across restarts)."""
    server = RedisServer(tmp, "--user", "p35", *rules.split(), "--appendonly", "yes")
    server.start()
    return server


@pytest.fixture
def acl_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = secure_server(tmp_path / "acl", documented_acl())
    yield server
    server.stop()


def user_url(server: RedisServer, password: str = PASSWORD) -> str:
    return f"redis://p35:{password}@127.0.0.1:{server.port}/0"


def everything_in_redis(r: RawRedis) -> str:
    """Every key and value, as text, to search for secrets."""
    out = []
    for key in r.scan_iter("*"):
        kind = r.type(key).decode()
        out.append(key.decode(errors="replace"))
        if kind == "hash":
            out.append(repr(r.hgetall(key)))
        elif kind == "stream":
            out.append(repr(r.xrange(key, count=100_000)))
        elif kind == "zset":
            out.append(repr(r.zrange(key, 0, -1, withscores=True)))
        elif kind == "string":
            out.append(repr(r.get(key)))
    return "\n".join(out)


async def top_frame(url: str) -> None:
    from decision_intel.cli.top import Reader
    from decision_intel.settings import load as load_settings
    from decision_intel.store.client import connect

    settings = load_settings(redis_url=url)
    client = connect(settings)
    try:
        frame = await Reader(client, settings).frame("1h")
        assert frame.status and frame.error is None
    finally:
        await client.aclose()


def test_the_documented_acl_runs_the_whole_daemon_and_cli_and_no_secret_leaks(
    acl_server: RedisServer, base_env: dict[str, str], daemons: list[Daemon], tmp_path: Path
) -> None:
    """Drain exact, reclaim, invalid stream, snapshots, departed-consumer removal, status and
    check, a Redis outage and a wrong password: no ACL denial, and the password in no output."""
    admin = RawRedis(port=acl_server.port)
    expected = load(admin, 5_000)  # includes UNKNOWN entries: the invalid stream is written
    admin.xgroup_create(STREAM, GROUP, id="0")
    admin.xgroup_createconsumer(STREAM, GROUP, "departed")  # removed by the daemon later
    admin.sadd("quantum:p35:consumers", "departed")  # a p35 daemon's name: p35 removes only those
    env = {**base_env, "P35_REDIS_URL": user_url(acl_server)}
    d = Daemon(env, tmp_path / "d.log").start()
    daemons.append(d)
    wait_for(lambda: drained(admin, 5_000), 60, "the drain as the ACL user")
    wait_for(
        lambda: b"departed" not in [c["name"] for c in admin.xinfo_consumers(STREAM, GROUP)],
        30,
        "the departed consumer removed",
    )
    wait_for(lambda: bool(admin.exists("quantum:p35:decision:counts:1h")), 30, "a snapshot")
    status = run_p35(env, "status")
    check = run_p35(env, "check", "--max-age", "30")
    assert status.returncode == 0, status.stderr
    assert check.returncode == 0, check.stdout + check.stderr
    why = run_p35(env, "why", "--window", "1h", "--json")
    why_one = run_p35(env, "why", "--symbol", "BTCUSDT")
    assert json.loads(why.stdout)["verdict"] and not why.stderr and not why_one.stderr
    asyncio.run(top_frame(env["P35_REDIS_URL"]))  # what one `p35 top` refresh reads
    acl_server.restart()  # an outage; the user lives on the command line, data in the AOF
    admin = RawRedis(port=acl_server.port)
    wait_for(lambda: any(e["event"] == "redis.available" for e in d.events()), 30, "back")
    assert d.terminate_and_wait()[0] == 0
    assert_exact(admin, expected)
    assert admin.acl_log() == [], "the daemon or the CLI used something the ACL does not allow"

    wrong = Daemon(
        {**env, "P35_REDIS_URL": user_url(acl_server, "wrong-" + PASSWORD)}, tmp_path / "wrong.log"
    ).start()
    assert wrong.wait(30) == 78
    [denied] = [e for e in wrong.events() if e["event"] == "redis.access_denied"]
    assert "invalid username-password pair" in str(denied["detail"])

    printed = "\n".join(
        [
            d.output(),
            wrong.output(),
            status.stdout,
            status.stderr,
            check.stdout,
            check.stderr,
            why.stdout,
            why_one.stdout,
        ]
    )
    assert "p35:***@" in d.output()  # the URL is logged, redacted
    assert PASSWORD not in printed
    assert PASSWORD not in everything_in_redis(admin)


def test_a_missing_permission_stops_the_start_with_one_line_naming_it(
    tmp_path: Path, base_env: dict[str, str], daemons: list[Daemon]
) -> None:
    rules = documented_acl().replace(" +xautoclaim", "")
    server = secure_server(tmp_path / "less", rules)
    try:
        d = Daemon({**base_env, "P35_REDIS_URL": user_url(server)}, tmp_path / "d.log").start()
        daemons.append(d)
        assert d.wait(30) == 78
        errors = [e for e in d.events() if e["level"] == "error"]
        assert [e["event"] for e in errors] == ["redis.access_denied"]
        assert "'xautoclaim'" in str(errors[0]["detail"])
        assert not RawRedis(port=server.port).exists("quantum:p35:status")  # nothing began
    finally:
        server.stop()


def test_the_documented_acl_refuses_what_an_attacker_with_the_password_would_try(
    acl_server: RedisServer,
) -> None:
    """The p35 user may read and acknowledge the input stream, never write it: no forged
    entries, no deleting, trimming or expiring it, no other keys, no EVAL, no SCAN."""
    admin = RawRedis(port=acl_server.port)
    admin.xadd(STREAM, {"decision": "SKIP"})
    admin.xgroup_create(STREAM, GROUP, id="0")
    admin.set("other:service:key", "x")
    p35 = RawRedis.from_url(user_url(acl_server))
    attempts = [
        ("XADD", STREAM, "*", "decision", "EXECUTE"),
        ("DEL", STREAM),
        ("EXPIRE", STREAM, "1"),
        ("SET", STREAM, "x"),
        ("XTRIM", STREAM, "MAXLEN", "0"),
        ("XDEL", STREAM, "0-1"),
        ("XSETID", STREAM, "99999999999999-0"),
        ("XGROUP", "DESTROY", STREAM, GROUP),
        ("XGROUP", "SETID", STREAM, GROUP, "$"),
        ("GET", "other:service:key"),
        ("DEL", "other:service:key"),
        ("EVAL", "while true do end", "0"),
        ("EVAL", "return redis.call('XADD', ARGV[1], '*', 'a', 'b')", "0", STREAM),
        ("SCAN", "0"),
        ("KEYS", "*"),
        ("FLUSHALL",),
        ("CONFIG", "GET", "*"),
    ]
    for cmd in attempts:
        with pytest.raises(redis.exceptions.NoPermissionError):
            p35.execute_command(*cmd)
    # The script path is closed too: a loaded script runs under the same ACL.
    sha = p35.script_load("return redis.call('XADD', ARGV[1], '*', 'forged', '1')")
    with pytest.raises(redis.exceptions.ResponseError, match="The user executing the script can't"):
        p35.evalsha(sha, 0, STREAM)
    assert admin.xlen(STREAM) == 1 and admin.exists("other:service:key")
    p35.close()


# -- TLS --------------------------------------------------------------------------------


def make_certs(tmp: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for localhost/127.0.0.1 signed by it."""
    if not shutil.which("openssl"):
        pytest.fail("openssl is not installed (apt-get install -y openssl)")

    def ssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=tmp, check=True, capture_output=True)

    ssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=p35-test-ca",
    )
    ssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    )
    (tmp / "ext.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    ssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    )
    return tmp / "ca.pem", tmp / "server.pem", tmp / "server.key"


def test_the_daemon_counts_over_tls_with_a_ca_file(
    tmp_path: Path, base_env: dict[str, str], daemons: list[Daemon]
) -> None:
    ca, cert, key = make_certs(tmp_path)
    port = free_port()
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            "0",
            "--tls-port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--tls-cert-file",
            str(cert),
            "--tls-key-file",
            str(key),
            "--tls-ca-cert-file",
            str(ca),
            "--tls-auth-clients",
            "no",
            "--save",
            "",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        admin = RawRedis(host="localhost", port=port, ssl=True, ssl_ca_certs=str(ca))
        deadline = time.monotonic() + 10
        while True:
            try:
                admin.ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server with TLS did not start"
                time.sleep(0.05)
        expected = load(admin, 3_000)
        env = {
            **base_env,
            "P35_REDIS_URL": f"rediss://localhost:{port}/0",
            "P35_REDIS_CA_FILE": str(ca),
        }
        d = Daemon(env, tmp_path / "d.log").start()
        daemons.append(d)
        wait_for(lambda: drained(admin, 3_000), 60, "the drain over TLS")
        assert d.terminate_and_wait()[0] == 0
        assert_exact(admin, expected)
        # Without the CA the certificate is refused: the check is really made.
        untrusted = Daemon({**env, "P35_REDIS_CA_FILE": ""}, tmp_path / "u.log").start()
        daemons.append(untrusted)
        wait_for(
            lambda: any(e["event"] == "redis.unavailable" for e in untrusted.events()),
            20,
            "the untrusted certificate refused",
        )
        assert "CERTIFICATE_VERIFY_FAILED" in untrusted.output()
    finally:
        proc.terminate()
        proc.wait(10)
