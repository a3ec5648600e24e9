"""``manage.py sms_balance [--provider NAME]``: print each provider's balance."""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError, CommandParser

from ... import conf
from ...backends import get_backend
from ...costs import backend_price
from ...exceptions import SMSError


class Command(BaseCommand):
    help = (
        "Ask each configured SMS provider (or --provider NAME) for the money on its account and "
        "print it, with the price of one SMS part where ?price= is set. A provider without a "
        "balance request is listed as not supported; one that cannot be asked is an error "
        "(the command then exits with status 1)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--provider", help="Only this provider alias.")

    def handle(self, *args, provider: str | None = None, **options) -> None:
        aliases = conf.provider_aliases()
        if provider and provider not in aliases:
            known = ", ".join(aliases) or "none"
            raise CommandError(f"No provider {provider!r} is configured (configured: {known}).")
        if not aliases:
            raise CommandError("No SMS provider is configured (set SMS_URL).")
        failed = [alias for alias in ([provider] if provider else aliases) if not self.show(alias)]
        if failed:
            raise CommandError(f"The balance of {', '.join(failed)} could not be read.")

    def show(self, alias: str) -> bool:
        """Print one provider's line; False when its balance could not be read."""
        try:
            backend = get_backend(alias)
        except (ImproperlyConfigured, SMSError) as exc:
            self.stderr.write(f"{alias}: not configured correctly: {exc}")
            return False
        name = f"{alias} ({backend.display_name})"
        price = backend_price(backend)
        priced = f"; one SMS part costs {price.amount} {price.currency}" if price else ""
        if not backend.supports_balance:
            self.stdout.write(f"{name}: balance not supported{priced}")
            return True
        try:
            balance = backend.balance()
        except NotImplementedError:
            self.stdout.write(f"{name}: balance not supported{priced}")
            return True
        except SMSError as exc:
            self.stderr.write(f"{name}: error: {exc}")
            return False
        except Exception as exc:  # a bug or an unexpected answer: one line, not a traceback
            self.stderr.write(f"{name}: error: {type(exc).__name__}: {exc}")
            return False
        self.stdout.write(f"{name}: {balance.amount} {balance.currency}{priced}")
        return True
