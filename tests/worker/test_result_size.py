"""TASKGATE_MAX_RESULT_BYTES: a result over it fails the task with ResultTooLarge, not retried."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from taskgate.config import Settings
from taskgate.registry import ResultTooLarge, RetryPolicy, build_spec

from ..helpers import lines, submit, wait

#: The session worker's cap: the default (its fixture sets no TASKGATE_MAX_RESULT_BYTES).
CAP: int = Settings.model_fields["max_result_bytes"].default


def test_the_cap_defaults_to_one_mebibyte() -> None:
    assert CAP == 1_048_576
    assert Settings(max_result_bytes=10).max_result_bytes == 10
    with pytest.raises(ValueError, match="max_result_bytes"):
        Settings(max_result_bytes=0)


def test_the_cap_counts_the_result_json_bytes_exactly() -> None:
    def text(size: int) -> str:
        return "é" * size

    spec = build_spec(text, "text_probe", "taskgate.text_probe", RetryPolicy(), None)
    assert spec.dump_result("é" * 4, max_bytes=10) == "é" * 4  # "é" is 2 bytes: 8 + 2 quotes
    with pytest.raises(ResultTooLarge) as raised:
        spec.dump_result("é" * 5, max_bytes=10)
    assert str(raised.value).startswith("the task returned a result of 12 bytes, more than "
                                        "TASKGATE_MAX_RESULT_BYTES (10): store big outputs in a file")
    assert spec.dump_result("é" * 5) == "é" * 5  # no cap given: none applies


def test_a_result_too_large_is_never_transient() -> None:
    policy = RetryPolicy(transient=(ValueError,))
    assert policy.is_transient(ValueError("flaky")) and not policy.is_transient(ResultTooLarge("big"))


def test_a_result_over_the_cap_fails_the_task_once(client: httpx.Client, tmp_path: Path) -> None:
    """The task's retry policy names ValueError (ResultTooLarge's base): it still runs once."""
    log = tmp_path / "runs.log"
    size = 1_100_000
    task_id = submit(client, "big_result", {"log": str(log), "size": size})
    body = wait(client, task_id)
    assert body["state"] == "failed", body
    assert body["error"] == {
        "type": "ResultTooLarge", "retryable": False,
        "message": f"the task returned a result of {size + 2:,} bytes, more than TASKGATE_MAX_RESULT_BYTES "
                   f"({CAP:,}): store big outputs in a file (taskgate's files API, or your own storage) and "
                   "return its id"}, body
    assert body["result"] is None and body["attempts"] == 1, body
    assert len(lines(log)) == 1


def test_a_result_under_the_cap_succeeds(client: httpx.Client, tmp_path: Path) -> None:
    log = tmp_path / "runs.log"
    task_id = submit(client, "big_result", {"log": str(log), "size": 1_000_000})
    body = wait(client, task_id)
    assert body["state"] == "succeeded", body.get("error")
    assert body["result"] == "x" * 1_000_000
    assert len(lines(log)) == 1
