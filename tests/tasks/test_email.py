"""send_email against a real SMTP server: delivery, transient 4xx retried, permanent 5xx not."""

from __future__ import annotations

import httpx
import pytest

from taskgate.tasks.email import SMTPTemporaryError, deliver

from ..helpers import free_port, submit, wait
from ..smtp import ScriptedHandler

Smtp = tuple[ScriptedHandler, str]


def test_email_is_delivered(client: httpx.Client, smtp_server: Smtp) -> None:
    handler, _ = smtp_server
    task = wait(client, submit(client, "send_email", {"to": ["ann@example.com"], "subject": "Hello",
                                                      "body": "It works."}))
    assert task["state"] == "succeeded", task
    assert task["result"]["recipients"] == ["ann@example.com"]
    message = next(m for m in handler.messages if b"Message-ID: " + task["result"]["message_id"].encode()
                   in m.content)
    assert message.rcpt_tos == ["ann@example.com"]
    assert b"Subject: Hello" in message.content and b"It works." in message.content


def test_temporary_smtp_failures_are_retried(client: httpx.Client, smtp_server: Smtp) -> None:
    handler, _ = smtp_server
    handler.temporary_failures = 2
    task = wait(client, submit(client, "send_email", {"to": ["bob@example.com"], "subject": "Retry",
                                                      "body": "Third time lucky."}), 60)
    assert task["state"] == "succeeded", task
    assert task["attempts"] == 3


def test_permanent_smtp_failure_fails_at_once(client: httpx.Client) -> None:
    task = wait(client, submit(client, "send_email", {"to": ["ghost@refused.example"], "subject": "No",
                                                      "body": "Nobody home."}))
    assert task["state"] == "failed"
    assert task["attempts"] == 1
    assert task["error"]["type"] == "SMTPPermanentError" and task["error"]["retryable"] is False
    assert "550" in task["error"]["message"]


def test_bad_address_is_422(client: httpx.Client) -> None:
    response = client.post("/tasks/send_email", json={"to": ["not-an-address"], "subject": "x", "body": "y"})
    assert response.status_code == 422
    assert "body field 'to.0'" in response.json()["error"]["message"]


def test_unreachable_server_is_temporary() -> None:
    with pytest.raises(SMTPTemporaryError, match="unreachable"):
        deliver(f"smtp://127.0.0.1:{free_port()}", "a@example.com", ["b@example.com"], "s", "b")


@pytest.mark.parametrize("field,value", [
    ("subject", "Hello\r\nBcc: victim@example.com"), ("subject", "Hello\nX-Injected: 1"),
    ("subject", "Hello\rthere"), ("subject", "Hello\u2028there"),
    ("to", ["ann@example.com\r\nBcc: victim@example.com"]), ("to", ["ann@example.com\n"]),
])
def test_a_line_break_in_a_header_field_is_422_at_submit(client: httpx.Client, field: str,
                                                         value: object) -> None:
    """Header injection is refused when the task is submitted, naming the field, not found
    later by the worker (or, worse, sent)."""
    body = {"to": ["ann@example.com"], "subject": "Hello", "body": "Line one.\r\nLine two is fine."}
    response = client.post("/tasks/send_email", json={**body, field: value})
    assert response.status_code == 422, response.text
    message = response.json()["error"]["message"]
    assert f"body field '{field}" in message, message
    assert client.post("/tasks/send_email/batch", json={"items": [{**body, field: value}]}).status_code == 422
