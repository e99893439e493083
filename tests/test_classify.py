"""SPEC section 4 classification: the spec's own examples and cases of our own."""

from __future__ import annotations

import json

import pytest

from decision_intel.model.classify import classify, normalize_reason


def entry(**fields: object) -> dict[bytes, bytes]:
    out = {}
    for k, v in fields.items():
        out[k.encode()] = v if isinstance(v, bytes) else str(v).encode()
    return out


SPEC_LINES = [
    (
        '{"plan_id":"a1","symbol":"BTCUSDT","decision":"SKIP","executed":"False","would_execute":"False","steps_results":"[]","error":"no_position","timestamp":"1769929091"}',
        ("SKIP", "no_position", "BTCUSDT"),
    ),
    (
        '{"plan_id":"a2","symbol":"ETHUSDT","action":"PARTIAL_75","executed":"False","error":"duplicate_plan","timestamp":"1769929091"}',
        ("SKIP", "duplicate_plan", "ETHUSDT"),
    ),
    (
        '{"plan_id":"a3","symbol":"SOLUSDT","action":"FULL_CLOSE_PROPOSED","executed":"True","reduceOnly":"True","close_qty":"1.5","order_id":"991","order_status":"FILLED","timestamp":"1769929091"}',
        ("EXECUTE", "none", "SOLUSDT"),
    ),
    (
        '{"event_type":"apply.result","plan_id":"a4","symbol":"BTCUSDT","executed":"false","source":"intent_executor","details":"{\\"error\\": \\"p33_permit_denied:leverage\\", \\"decision\\": null}","timestamp":"1769929091"}',
        ("BLOCKED", "p33_permit_denied", "BTCUSDT"),
    ),
    (
        '{"event_type":"apply.result","plan_id":"a5","symbol":"ETHUSDT","executed":"false","source":"intent_executor","details":"{\\"decision\\": \\"DENIED\\", \\"error\\": \\"NOT_EXIT_OWNER:source=manual\\"}","timestamp":"1769929091"}',
        ("BLOCKED", "not_exit_owner", "ETHUSDT"),
    ),
    (
        '{"plan_id":"a6","symbol":"BNBUSDT","decision":"BLOCKED","executed":"False","error":"risk_paused:drawdown 7.1%","timestamp":"1769929091"}',
        ("BLOCKED", "risk_paused", "BNBUSDT"),
    ),
]


@pytest.mark.parametrize(("line", "want"), SPEC_LINES)
def test_spec_examples(line: str, want: tuple[str, str, str]) -> None:
    got = classify(entry(**json.loads(line)))
    assert (got.decision, got.reason, got.symbol) == want
    assert got.cause is None


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        ("position_too_large:$1234>$500_cap", "position_too_large"),
        ("RETRYABLE_RATE_LIMIT: APIError(code=-1003)", "retryable_rate_limit"),
        ("Duplicate plan_id", "duplicate_plan"),
        ("position_limit_reached_10/10", "position_limit_reached"),
        ("kill_score_critical,p33_permit_denied", "kill_score_critical"),
        ("layer4_kelly_25usdt", "layer4_kelly_25usdt"),
    ],
)
def test_spec_normalization_examples(raw: str, want: str) -> None:
    assert normalize_reason(raw) == want


J = json.dumps
CASES: list[tuple[str, dict[bytes, bytes], tuple[str, str, str | None]]] = [
    # decision words, case and whitespace
    ("executed word", entry(decision="executed"), ("EXECUTE", "none", None)),
    ("exec word", entry(decision=" Exec "), ("EXECUTE", "none", None)),
    ("skipped word", entry(decision="skipped", error="action_hold"), ("SKIP", "action_hold", None)),
    (
        "block word",
        entry(decision="block", reason="kill_switch_active"),
        ("BLOCKED", "kill_switch_active", None),
    ),
    ("rejected word", entry(decision="REJECTED"), ("BLOCKED", "none", None)),
    ("denied mixed case", entry(decision="DeNiEd"), ("BLOCKED", "none", None)),
    ("failed word", entry(decision="FAILED", error="exception"), ("ERROR", "exception", None)),
    ("fail word", entry(decision="\tfail\n"), ("ERROR", "none", None)),
    ("error word", entry(decision="error"), ("ERROR", "none", None)),
    ("decision beats executed", entry(decision="SKIP", executed="true"), ("SKIP", "none", None)),
    (
        "a word of the producer's own falls to executed",
        entry(decision="HOLD", executed="true"),
        ("EXECUTE", "none", None),
    ),
    # UNKNOWN / empty decision count as absent: fall through to executed
    (
        "decision UNKNOWN falls through",
        entry(decision="unknown", executed="true"),
        ("EXECUTE", "none", None),
    ),
    (
        "blank decision falls through",
        entry(decision="   ", executed="1"),
        ("EXECUTE", "none", None),
    ),
    # executed flag spellings
    ("executed True", entry(executed="True"), ("EXECUTE", "none", None)),
    ("executed yes", entry(executed="yes"), ("EXECUTE", "none", None)),
    ("executed t", entry(executed="T"), ("EXECUTE", "none", None)),
    ("executed y", entry(executed=" y "), ("EXECUTE", "none", None)),
    ("executed 0, no reason -> SKIP", entry(executed="0"), ("SKIP", "none", None)),
    (
        "executed no + skip reason",
        entry(executed="no", error="close_no_position"),
        ("SKIP", "no_position", None),
    ),
    (
        "executed f + error reason",
        entry(executed="f", error="BINANCE_ERROR: -2019"),
        ("ERROR", "binance_error", None),
    ),
    (
        "executed n + other reason",
        entry(executed="N", error="kill_score_critical"),
        ("BLOCKED", "kill_score_critical", None),
    ),
    (
        "executed FALSE + allowlist alias",
        entry(executed="FALSE", reason="symbol_not_in_allowlist"),
        ("SKIP", "not_in_allowlist", None),
    ),
    (
        "executed false + deny alias",
        entry(executed="false", error="deny_not_exit_owner"),
        ("BLOCKED", "not_exit_owner", None),
    ),
    (
        "executed false + p33 alias",
        entry(executed="false", error="p33_permit_missing_or_denied:x"),
        ("BLOCKED", "p33_permit_denied", None),
    ),
    ("executed odd value", entry(executed="maybe"), ("UNKNOWN", "none", None)),
    ("nothing at all", entry(plan_id="x"), ("UNKNOWN", "none", None)),
    # reason lookup: error before reason; none/null/nil are empty
    (
        "error beats reason",
        entry(decision="SKIP", error="no_position", reason="action_hold"),
        ("SKIP", "no_position", None),
    ),
    (
        "error None -> reason",
        entry(executed="false", error="None", reason="invalid_side"),
        ("ERROR", "invalid_side", None),
    ),
    (
        "error null -> reason",
        entry(executed="false", error="NULL", reason="action_hold"),
        ("SKIP", "action_hold", None),
    ),
    ("error nil, no reason", entry(executed="false", error=" nil "), ("SKIP", "none", None)),
    ("reason of only symbols", entry(decision="BLOCKED", error=":::"), ("BLOCKED", "none", None)),
    (
        "reason odd chars",
        entry(decision="BLOCKED", error="  Risk Paused!! (manual)  "),
        ("BLOCKED", "risk_paused_manual", None),
    ),
    (
        "reason keeps . and -",
        entry(decision="BLOCKED", error="gate-v2.1 x"),
        ("BLOCKED", "gate-v2.1_x", None),
    ),
    ("reason cut to 64", entry(decision="BLOCKED", error="a" * 100), ("BLOCKED", "a" * 64, None)),
    ("reason unicode", entry(decision="BLOCKED", error="déjà_vu"), ("BLOCKED", "d_j__vu", None)),
    # payload envelope and details
    (
        "payload envelope",
        entry(payload=J({"decision": "EXECUTED", "symbol": "btcusdt"})),
        ("EXECUTE", "none", "BTCUSDT"),
    ),
    (
        "top level beats payload",
        entry(decision="SKIP", payload=J({"decision": "ERROR"})),
        ("SKIP", "none", None),
    ),
    (
        "empty top falls to payload",
        entry(decision="", payload=J({"decision": "ERROR"})),
        ("ERROR", "none", None),
    ),
    (
        "payload before details",
        entry(
            executed="false", payload=J({"error": "no_position"}), details=J({"error": "exception"})
        ),
        ("SKIP", "no_position", None),
    ),
    (
        "details decision null",
        entry(executed="false", details=J({"decision": None, "error": "x"})),
        ("BLOCKED", "x", None),
    ),
    (
        "details bad JSON",
        entry(executed="false", error="no_position", details="{not json"),
        ("SKIP", "no_position", None),
    ),
    (
        "details a list",
        entry(executed="true", details=J(["decision", "ERROR"])),
        ("EXECUTE", "none", None),
    ),
    ("details a string", entry(details=J("DENIED")), ("UNKNOWN", "none", None)),
    ("payload bad JSON only", entry(payload="{{{"), ("UNKNOWN", "none", None)),
    ("JSON boolean executed", entry(payload=J({"executed": True})), ("EXECUTE", "none", None)),
    (
        "JSON number executed",
        entry(details=J({"executed": 0, "error": "no_position"})),
        ("SKIP", "no_position", None),
    ),
    ("JSON object decision", entry(details=J({"decision": {"x": 1}})), ("UNKNOWN", "none", None)),
    # symbols
    (
        "symbol lower-cased in",
        entry(decision="SKIP", symbol=" ethusdt "),
        ("SKIP", "none", "ETHUSDT"),
    ),
    ("symbol with slash", entry(decision="SKIP", symbol="BTC/USDT"), ("SKIP", "none", None)),
    ("symbol one char", entry(decision="SKIP", symbol="B"), ("SKIP", "none", None)),
    ("symbol 31 chars", entry(decision="SKIP", symbol="A" * 31), ("SKIP", "none", None)),
    ("symbol 30 chars", entry(decision="SKIP", symbol="A" * 30), ("SKIP", "none", "A" * 30)),
    # bytes and size
    ("non-UTF-8 decision", entry(decision=b"\xffSKIP\xfe"), ("UNKNOWN", "none", None)),
    (
        "non-UTF-8 reason",
        entry(decision="SKIP", error=b"bad\xff\xfegate:x"),
        ("SKIP", "bad_gate", None),
    ),
    ("non-UTF-8 symbol", entry(decision="SKIP", symbol=b"BTC\xff"), ("SKIP", "none", None)),
    ("1 MB reason", entry(decision="BLOCKED", error="z" * 1_000_000), ("BLOCKED", "z" * 64, None)),
    ("1 MB symbol", entry(decision="SKIP", symbol="S" * 1_000_000), ("SKIP", "none", None)),
    ("1 MB details", entry(executed="false", details="{" * 1_000_000), ("SKIP", "none", None)),
]


@pytest.mark.parametrize(("name", "fields", "want"), CASES, ids=[c[0] for c in CASES])
def test_cases(name: str, fields: dict[bytes, bytes], want: tuple[str, str, str | None]) -> None:
    got = classify(fields)
    assert (got.decision, got.reason, got.symbol) == want
    assert (got.cause is not None) == (got.decision == "UNKNOWN")


def test_enough_own_cases() -> None:
    """The issue asks for at least 40 cases beyond the spec's examples."""
    assert len(CASES) >= 40


@pytest.mark.parametrize(
    ("fields", "cause"),
    [
        (entry(plan_id="x"), "no decision and no executed field"),
        (entry(decision="hold"), "unrecognized decision 'hold' and no executed field"),
        (entry(executed="perhaps"), "unrecognized executed value 'perhaps'"),
        (
            entry(decision="Q" * 500),
            "unrecognized decision '" + "Q" * 64 + "...' and no executed field",
        ),
    ],
)
def test_unknown_carries_a_readable_cause(fields: dict[bytes, bytes], cause: str) -> None:
    assert classify(fields).cause == cause


def test_caches_do_not_change_answers() -> None:
    """The same inputs classify the same way after the caches fill and reset."""
    first = [
        classify(entry(decision="BLOCKED", error=f"gate_{i}_x:a")).reason for i in range(10_000)
    ]
    second = [
        classify(entry(decision="BLOCKED", error=f"gate_{i}_x:b")).reason for i in range(10_000)
    ]
    assert first == second == [f"gate_{i}_x" for i in range(10_000)]


# -- SPEC section 4, second revision (issue 13) -----------------------------------------

# One case per line: the table reads better unwrapped.
REVISED = [
    ("RECONCILE_CLOSE executed", entry(decision="RECONCILE_CLOSE", executed="True"),
     ("EXECUTE", "none", None)),
    ("RECONCILE_CLOSE not executed, no reason", entry(decision="RECONCILE_CLOSE", executed="False"),
     ("SKIP", "none", None)),
    ("RECONCILE_CLOSE not executed, a gate", entry(decision="RECONCILE_CLOSE", executed="false", error="risk_paused"),
     ("BLOCKED", "risk_paused", None)),
    ("guard BLOCKED in details, own word as error", entry(executed="false", details=json.dumps({"decision": "BLOCKED", "error": "blocked"})),
     ("BLOCKED", "none", None)),
    ("guard SKIP in details, own word as error", entry(executed="false", details=json.dumps({"decision": "SKIP", "error": "skip"})),
     ("SKIP", "none", None)),
    ("a producer's word as its own reason", entry(decision="DENIED", error="denied"), ("BLOCKED", "none", None)),
    ("reason_codes: the first one", entry(executed="false", error="kill_score_critical,p33_permit_denied"),
     ("BLOCKED", "kill_score_critical", None)),
    ("counts dropped", entry(executed="false", error="position_limit_reached_12/10"),
     ("BLOCKED", "position_limit_reached", None)),
    ("a decimal parameter dropped", entry(executed="false", error="slippage_above_3.5"),
     ("BLOCKED", "slippage_above", None)),
    ("a number inside stays", entry(executed="false", error="layer4_kelly_25usdt"),
     ("BLOCKED", "layer4_kelly_25usdt", None)),
    ("JSON false as error is empty", entry(executed="false", details=json.dumps({"error": False})),
     ("SKIP", "none", None)),
    ("JSON 0 as error is empty", entry(executed="false", details=json.dumps({"error": 0, "reason": "risk_paused"})),
     ("BLOCKED", "risk_paused", None)),
    ("JSON true as executed", entry(details=json.dumps({"executed": True})), ("EXECUTE", "none", None)),
    ("JSON array is empty", entry(executed="false", details=json.dumps({"error": ["a"], "reason": "x_gate"})),
     ("BLOCKED", "x_gate", None)),
    ("JSON object is empty", entry(details=json.dumps({"decision": {"a": 1}, "executed": "yes"})),
     ("EXECUTE", "none", None)),
    ("zero-width around a decision", entry(decision="\u200bSKIP\ufeff"), ("SKIP", "none", None)),
    ("zero-width around executed", entry(executed="\u200dtrue\u200c"), ("EXECUTE", "none", None)),
    ("zero-width around a symbol", entry(decision="SKIP", symbol="\ufeffbtcusdt\u200b"), ("SKIP", "none", "BTCUSDT")),
    ("ASCII letters only in symbols", entry(decision="SKIP", symbol="btcu\u017fdt"), ("SKIP", "none", None)),
    ("a dotless i is no I", entry(decision="SKIP", symbol="\u0131cpusdt"), ("SKIP", "none", None)),
]  # fmt: skip


@pytest.mark.parametrize(("name", "fields", "want"), REVISED, ids=[c[0] for c in REVISED])
def test_revised_rules(
    name: str, fields: dict[bytes, bytes], want: tuple[str, str, str | None]
) -> None:
    got = classify(fields)
    assert (got.decision, got.reason, got.symbol) == want
    assert got.cause is None


def test_operators_vocabulary_wins_over_the_built_in_one() -> None:
    from decision_intel.model.classify import Classifier, Vocabulary

    c = Classifier(
        Vocabulary.with_operators(
            skip=frozenset({"churn_global_freeze", "retryable_rate_limit"}),
            error=frozenset({"learning_plane_down", "no_position"}),
            aliases={"risk_booting": "risk_layer0_fail", "duplicate_plan_id": "dup"},
            words={"HOLD": "SKIP", "EXECUTE": "BLOCKED"},
        )
    )
    not_executed = {"executed": "false"}
    assert c.classify(entry(**not_executed, error="churn_global_freeze")).decision == "SKIP"
    assert c.classify(entry(**not_executed, error="RETRYABLE_RATE_LIMIT: x")).decision == "SKIP"
    assert c.classify(entry(**not_executed, error="learning_plane_down")).decision == "ERROR"
    assert c.classify(entry(**not_executed, error="no_position")).decision == "ERROR"
    assert c.classify(entry(**not_executed, error="risk_booting")).reason == "risk_layer0_fail"
    assert c.classify(entry(**not_executed, error="duplicate_plan_id")).reason == "dup"
    assert c.classify(entry(decision="hold")).decision == "SKIP"
    assert c.classify(entry(decision="execute")).decision == "BLOCKED"
    assert classify(entry(decision="hold")).decision == "UNKNOWN"  # the built-in one is unchanged


def test_explain_says_which_rule_and_layer() -> None:
    from decision_intel.model.classify import Classifier

    got = Classifier().explain(
        entry(
            symbol="ETHUSDT",
            executed="false",
            details=json.dumps({"decision": "DENIED", "error": "NOT_EXIT_OWNER:source=manual"}),
        )
    )
    assert (got["decision"], got["reason"], got["symbol"], got["rule"]) == (
        "BLOCKED",
        "not_exit_owner",
        "ETHUSDT",
        "decision",
    )
    assert got["fields"]["decision"] == {"value": "DENIED", "layer": "details"}
    assert got["fields"]["error"]["layer"] == "details"
    assert got["fields"]["symbol"] == {"value": "ETHUSDT", "layer": "top"}
    flag = Classifier().explain(entry(decision="RECONCILE_CLOSE", executed="True"))
    assert flag["rule"] == "executed" and flag["fields"]["executed"]["layer"] == "top"


# -- what the fast paths must not change -------------------------------------------------


def test_strip_removes_exactly_unicode_whitespace_and_the_zero_width_characters() -> None:
    from decision_intel.model.classify import strip

    whitespace = [c for c in map(chr, range(0x110000)) if c.isspace()]
    for c in [*whitespace, "\u200b", "\u200c", "\u200d", "\ufeff"]:
        assert strip(f"{c}{c}risk{c}paused{c}") == f"risk{c}paused", repr(c)
    for c in ["\u200e", "\u00ad", "\u2060", "_", "x"]:  # look blank or are not: kept
        assert strip(f"{c}a{c}") == f"{c}a{c}", repr(c)


# JSON that orjson refuses and the standard library reads (and SPEC wants read): the
# classifier's fallback must give what it always gave.
REFUSED_BY_ORJSON = [
    ("invalid UTF-8 is replaced", b'{"error": "risk_paused\xff:x", "decision": "BLOCKED"}',
     ("BLOCKED", "risk_paused", None)),
    ("NaN", b'{"error": "risk_paused", "qty": NaN}', ("BLOCKED", "risk_paused", None)),
    ("a lone surrogate", b'{"error": "gate\\ud800_x:1"}', ("BLOCKED", "gate__x", None)),
    ("an integer past 64 bits", b'{"error": 123456789012345678901234567890}',
     ("BLOCKED", "123456789012345678901234567890", None)),
    ("a float", b'{"error": 1.5e300}', ("BLOCKED", "1.5e", None)),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "details", "want"), REFUSED_BY_ORJSON, ids=[c[0] for c in REFUSED_BY_ORJSON]
)
def test_json_that_orjson_refuses_is_read_as_the_standard_library_reads_it(
    name: str, details: bytes, want: tuple[str, str, str | None]
) -> None:
    got = classify(entry(executed="false", details=details))
    assert (got.decision, got.reason, got.symbol) == want


def _executor(n: int, inner_error: str, **top: object) -> dict[bytes, bytes]:
    """The Intent Executor's shape: a unique plan_id and timestamp inside `details`."""
    result = {"plan_id": f"p{n}", "timestamp": f"{1769929091 + n}", "error": inner_error}
    return entry(symbol="BTCUSDT", executed="false", details=json.dumps(result), **top)


@pytest.mark.parametrize("order", [("none", "none: 3"), ("none: 3", "none")])
def test_the_layer_memo_tells_a_whole_value_from_one_cut_at_its_colon(
    order: tuple[str, str],
) -> None:
    """`error: none` in details counts as absent (the reason field decides); `none: 3`
    is a reason of its own. Remembered by what precedes the ':', the two must not meet."""
    from decision_intel.model.classify import Classifier

    c = Classifier()
    got = []
    for n, error in enumerate(order):
        inner = {"plan_id": f"p{n}", "error": error, "reason": "risk_paused"}
        e = entry(symbol="BTCUSDT", executed="false", details=json.dumps(inner))
        got.append(c.classify(e))
        assert got[-1] == Classifier().classify(e)
    assert {g.reason for g in got} == {"risk_paused", "none"}


def test_the_memo_serves_what_the_top_level_decided_whatever_the_layers_hold() -> None:
    from decision_intel.model.classify import Classifier

    c = Classifier()
    # The top level decides (decision word, error): the details never matter.
    first = c.classify(_executor(0, "ignored", decision="SKIP", error="no_position"))
    for n in range(1, 1000):
        assert c.classify(_executor(n, "ignored", decision="SKIP", error="no_position")) is first
    assert len(c._results) == 1 and not c._layered
    # The reason lives in `details`: same top level, different results; never served
    # from the top-level memo (it only says to look further). Unique details (plan_id,
    # timestamp) are remembered by what the rules read there, a parameter after ':' aside.
    errors = ("no_position", "risk_paused: 3 of 3", "risk_paused: 1 of 3")
    got = {c.classify(_executor(n, errors[n % 3])) for n in range(5000)}
    assert {(g.decision, g.reason) for g in got} == {
        ("SKIP", "no_position"),
        ("BLOCKED", "risk_paused"),
    }
    assert len(c._results) == 2
    assert len(c._layered) == 2
    assert len(got) == 2, "a remembered result is served, not rebuilt"
    # A producer that repeats its layer is still served from the small memo.
    again = entry(executed="false", payload='{"error": "risk_paused"}')
    assert c.classify(again) is c.classify(dict(again))
