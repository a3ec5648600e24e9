"""``manage.py send_sms TO TEXT``: send one SMS now and print its msg_id and status."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from crm_sms.models import MessageStatus
from crm_sms.outbox import send_sms


class Command(BaseCommand):
    help = (
        "Send one SMS now (through the same path as the worker) and print its msg_id and "
        "status. Invalid input stores and sends nothing and exits non-zero."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("to", help="the phone number, e.g. '+7 900 123-42-12'")
        parser.add_argument("text", help="the message text")
        parser.add_argument("--provider", help="provider alias (default: DEFAULT_PROVIDER)")
        parser.add_argument("--sender", help="sender name (default: the provider's)")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            message = send_sms(
                options["to"],
                options["text"],
                sender=options.get("sender"),
                provider=options.get("provider"),
                now=True,
            )
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from None
        except ImproperlyConfigured as exc:
            raise CommandError(str(exc)) from None
        line = f"msg_id={message.msg_id} status={message.status}"
        if message.provider_message_id:
            line += f" provider_message_id={message.provider_message_id}"
        if message.error_code or message.error_message:
            line += f" error={message.error_code}: {message.error_message}"
        if message.status == MessageStatus.FAILED:
            raise CommandError(line)
        if message.status == MessageStatus.QUEUED:
            line += " (will be retried by the worker)"
        self.stdout.write(line)
