"""Logging: journald priority prefixes, JSON lines, and no secret in any line."""

from __future__ import annotations

import io
import json
import os
import tempfile

import structlog

from decision_intel.daemon import logs


def emit(mode: logs.Mode, secrets: tuple[str, ...] = ()) -> list[str]:
    out = io.StringIO()
    logs.configure("DEBUG", mode, secrets, stream=out)
    log = structlog.get_logger()
    log.debug("d")
    log.info("i", url="redis://:hunter2@h:6379/0")
    log.warning("w")
    log.error("e", error="auth failed for hunter2")
    return out.getvalue().splitlines()


def test_journal_lines_start_with_the_syslog_priority() -> None:
    lines = emit("journal")
    assert [line[:3] for line in lines] == ["<7>", "<6>", "<4>", "<3>"]
    assert lines[2] == "<4>event='w' level='warning'"


def test_json_lines_are_one_object_per_event() -> None:
    lines = emit("json")
    assert [json.loads(line)["event"] for line in lines] == ["d", "i", "w", "e"]


def test_secrets_are_scrubbed_from_every_rendering() -> None:
    for mode in ("journal", "json", "console"):
        text = "\n".join(emit(mode, ("hunter2",)))
        assert "hunter2" not in text
        assert "***" in text


def test_level_filter_drops_lower_levels() -> None:
    out = io.StringIO()
    logs.configure("WARNING", "json", (), stream=out)
    structlog.get_logger().info("quiet")
    structlog.get_logger().warning("loud")
    assert [json.loads(x)["event"] for x in out.getvalue().splitlines()] == ["loud"]


def test_journal_mode_is_detected_only_for_the_named_stream() -> None:
    with tempfile.TemporaryFile("w") as f:
        st = os.fstat(f.fileno())
        assert logs.detect_mode({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}, f) == "journal"
        assert logs.detect_mode({"JOURNAL_STREAM": "1:2"}, f) == "json"
        assert logs.detect_mode({}, f) == "json"
