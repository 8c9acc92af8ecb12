"""The mail port: one small interface, one module per backend.

``open_mailer(settings)`` picks the backend from ``settings.smtp_url``:

    ""                     roost.mail.console:ConsoleMailer  (development: logs, sends nothing)
    smtp://  smtps://      roost.mail.smtp:SMTPMailer        (imported lazily)

Services do not call a mailer directly: they queue mail with ``roost.mail.outbox.enqueue``
inside their write transaction, and ``OutboxWorker`` delivers it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from roost.backends import load_backend
from roost.settings import Settings

MAX_SUBJECT_LENGTH = 998
"""RFC 5322 line limit; a subject is one header line."""
MAX_BODY_LENGTH = 1_000_000
MAX_ADDRESS_LENGTH = 254
"""RFC 5321 path limit."""


class MailError(Exception):
    """A mail could not be handed to the mail server.

    ``permanent`` is true when the server refused this mail for good (an unknown
    recipient, a rejected message): sending it again cannot succeed. Anything else
    (connection refused, timeout, a 4xx reply, bad credentials) is worth retrying.
    The message is safe to log and store: it never holds a credential.
    """

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


@dataclass(frozen=True, slots=True)
class Mail:
    """One plain-text mail to one recipient (the sender is ``settings.mail_from``)."""

    recipient: str
    subject: str
    body: str

    def __post_init__(self) -> None:
        for name, value in (("recipient", self.recipient), ("subject", self.subject)):
            if "\r" in value or "\n" in value:  # header injection
                raise ValueError(f"a mail {name} must be one line")
        if "@" not in self.recipient or len(self.recipient) > MAX_ADDRESS_LENGTH:
            raise ValueError("a mail recipient must be an email address")
        if len(self.subject) > MAX_SUBJECT_LENGTH:
            raise ValueError(f"a mail subject has at most {MAX_SUBJECT_LENGTH} characters")
        if len(self.body) > MAX_BODY_LENGTH:
            raise ValueError(f"a mail body has at most {MAX_BODY_LENGTH} characters")


class Mailer(ABC):
    """Hands mail to a mail server (or, in development, to the log)."""

    @abstractmethod
    async def send(self, message: Mail) -> None:
        """Deliver ``message`` to the server; raise ``MailError`` if it was not accepted.

        Returning means the server accepted the mail. Every call has a time limit.
        """

    @abstractmethod
    async def aclose(self) -> None:
        """Release connections; ``send`` is not called afterwards."""


BACKENDS = {
    "": "roost.mail.console:ConsoleMailer",
    "smtp": "roost.mail.smtp:SMTPMailer",
    "smtps": "roost.mail.smtp:SMTPMailer",
}


def open_mailer(settings: Settings) -> Mailer:
    """The mailer named by ``settings.smtp_url``'s scheme (imported lazily)."""
    scheme = settings.smtp_url.split(":", 1)[0] if settings.smtp_url else ""
    target = BACKENDS.get(scheme)
    if target is None:  # the URL may hold a password: echo the scheme only if it is one
        shown = repr(scheme) if scheme.isalnum() and len(scheme) <= 10 else "(malformed)"
        raise ValueError(f"unsupported smtp_url scheme {shown}: use smtp:// or smtps://")
    cls: type[Mailer] = load_backend(target)
    return cls(settings)  # type: ignore[call-arg]
