"""Sending email through SMTP (``TASKGATE_SMTP_URL``), retrying only what is transient."""

from __future__ import annotations

import smtplib
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Annotated
from urllib.parse import unquote, urlsplit

from pydantic import AfterValidator, BaseModel, BeforeValidator, EmailStr, Field

from ..config import get_settings
from ..declare import task
from ..registry import RetryPolicy

#: Seconds for the SMTP connection and each command.
SMTP_TIMEOUT = 30.0


class SMTPTemporaryError(ConnectionError):
    """The server could not be reached or answered 4xx: worth another attempt."""


class SMTPPermanentError(ValueError):
    """The server refused the message or a recipient with 5xx: retrying will not help."""


class EmailReceipt(BaseModel):
    """What send_email reports once the server accepted the message."""

    message_id: str
    recipients: list[str]


def one_line(value: str) -> str:
    """``value``, refused when it holds a line break (CR, LF or any other) or a NUL: in a
    header field it would end the header and start another the sender did not write."""
    if "".join(value.splitlines()) != value or "\x00" in value:
        raise ValueError("a header field cannot hold a line break (CR or LF) or a NUL")
    return value


#: Text that goes into a message's header (the subject): one line.
HeaderText = Annotated[str, AfterValidator(one_line)]


def one_line_input(value: object) -> object:
    """``one_line`` on raw input before its type is checked (a non-string is left to the type)."""
    return one_line(value) if isinstance(value, str) else value


#: A recipient: one line, checked before EmailStr, which strips a trailing line break before
#: pydantic 2.14 (and so took "ann@example.com\n").
Recipient = Annotated[EmailStr, BeforeValidator(one_line_input)]


def _classify(code: int, detail: object) -> Exception:
    text = detail.decode(errors="replace") if isinstance(detail, bytes) else str(detail)
    if 400 <= code < 500:
        return SMTPTemporaryError(f"SMTP {code}: {text}")
    return SMTPPermanentError(f"SMTP {code}: {text}")


def deliver(smtp_url: str, sender: str, to: list[str], subject: str, body: str) -> EmailReceipt:
    """Send one message; raise SMTPTemporaryError (retry) or SMTPPermanentError (give up)."""
    url = urlsplit(smtp_url)
    if url.scheme not in ("smtp", "smtps", "smtp+starttls") or not url.hostname:
        raise SMTPPermanentError(f"TASKGATE_SMTP_URL must look like smtp://host:port, not {smtp_url!r}")
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(to)
    message["Subject"] = subject
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or "taskgate")
    message.set_content(body)
    client = smtplib.SMTP_SSL if url.scheme == "smtps" else smtplib.SMTP
    try:
        with client(url.hostname, url.port or (465 if url.scheme == "smtps" else 25),
                    timeout=SMTP_TIMEOUT) as smtp:
            if url.scheme == "smtp+starttls":
                smtp.starttls()
            if url.username:
                smtp.login(unquote(url.username), unquote(url.password or ""))
            smtp.send_message(message)
    except smtplib.SMTPRecipientsRefused as exc:
        codes = [code for code, _ in exc.recipients.values()]
        worst = max(codes) if codes else 550
        raise _classify(worst, "; ".join(f"{rcpt}: {detail!r}" for rcpt, (_, detail)
                                         in exc.recipients.items())) from None
    except smtplib.SMTPResponseException as exc:
        raise _classify(exc.smtp_code, exc.smtp_error) from None
    except (smtplib.SMTPServerDisconnected, OSError) as exc:
        raise SMTPTemporaryError(f"SMTP server {url.hostname}:{url.port} unreachable: {exc}") from None
    return EmailReceipt(message_id=str(message["Message-ID"]), recipients=to)


@task(retry=RetryPolicy(transient=(SMTPTemporaryError,), max_retries=5, backoff=1.0, max_delay=60.0))
def send_email(
    to: Annotated[list[Recipient], Field(min_length=1, max_length=50, description="Recipients.")],
    subject: Annotated[HeaderText, Field(max_length=998, description="One line: no CR or LF.")],
    body: Annotated[str, Field(max_length=1_000_000, description="Plain-text body.")],
) -> EmailReceipt:
    """Send a plain-text email through SMTP.

    Connection failures and 4xx answers are retried with backoff (up to 5 times);
    5xx answers and refused recipients fail at once.
    """
    settings = get_settings()
    if settings.smtp_url is None:
        raise SMTPPermanentError("TASKGATE_SMTP_URL is not set on this worker")
    return deliver(settings.smtp_url, settings.smtp_from, [str(address) for address in to], subject, body)
