"""A real SMTP server (aiosmtpd) the tests can tell to fail."""

from __future__ import annotations

from typing import Any

from aiosmtpd.controller import Controller

from .helpers import free_port


class ScriptedHandler:
    """Accepts mail, except: the next ``temporary_failures`` messages get 421, and recipients
    at ``@refused.example`` get 550."""

    def __init__(self) -> None:
        self.messages: list[Any] = []
        self.temporary_failures = 0

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,  # noqa: N802
                          rcpt_options: list[str]) -> str:
        if address.endswith("@refused.example"):
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        if self.temporary_failures > 0:
            self.temporary_failures -= 1
            return "421 4.3.2 try again later"
        self.messages.append(envelope)
        return "250 Message accepted"


def start() -> tuple[Controller, ScriptedHandler, str]:
    handler = ScriptedHandler()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    return controller, handler, f"smtp://127.0.0.1:{port}"
