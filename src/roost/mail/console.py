"""Development mailer: writes each mail to the log instead of sending it.

Chosen when ``smtp_url`` is empty, so a developer can sign up, follow the verification
link printed in the log, and never configure a mail server. Every entry is a warning
marked ``DEVELOPMENT: mail not sent`` so nobody mistakes it for delivery in production.
"""

from __future__ import annotations

import re

import structlog

from roost.mail.base import Mail, Mailer
from roost.settings import Settings

NOT_SENT = "DEVELOPMENT: mail not sent"
LINK = re.compile(r"https?://[^\s<>\"']+")


class ConsoleMailer(Mailer):
    def __init__(self, settings: Settings) -> None:
        self._sender = settings.mail_from

    async def send(self, message: Mail) -> None:
        structlog.get_logger("roost.mail").warning(
            NOT_SENT,
            sender=self._sender,
            recipient=message.recipient,
            subject=message.subject,
            links=LINK.findall(message.body),
            body=message.body,
        )

    async def aclose(self) -> None:
        return None
