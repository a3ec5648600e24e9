"""``manage.py sms_erase_contact (--phone PHONE | --id ID) [--export FILE] [--dry-run]``: export
and erase a contact's personal data on request (152-FZ; ``crm_sms.privacy``)."""

from __future__ import annotations

import json
import os
import sys

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from ...models import Contact
from ...phones import normalize_phone
from ...privacy import erase_contact, erasure_counts, export_contact_data


class Command(BaseCommand):
    help = (
        "Erase a contact's personal data (152-FZ): its fields, its messages' phones and texts, "
        "provider answers; counts and statuses stay. --export FILE first writes everything "
        "stored about the contact as JSON (- for standard output); --dry-run only says what "
        "would be erased."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        which = parser.add_mutually_exclusive_group(required=True)
        which.add_argument("--phone", help="The contact's phone, in any notation.")
        which.add_argument("--id", type=int, help="The contact's id.")
        parser.add_argument("--export", metavar="FILE", help="Write the contact's data here.")
        parser.add_argument("--dry-run", action="store_true", help="Change nothing.")
        parser.add_argument("--reason", default="", help="Why (kept in the erasure's record).")
        parser.add_argument(
            "--no-input", "--noinput", action="store_false", dest="interactive",
            help="Do not ask for confirmation.",
        )  # fmt: skip

    def handle(self, *args, **options) -> None:
        contact = self.find(options["phone"], options["id"])
        if options["export"]:
            self.export(contact, options["export"])
        counts = erasure_counts(contact)
        summary = (
            f"{contact} (#{contact.pk}): {counts['messages']} message(s) to blank "
            f"({counts['messages_cancelled']} still to be sent: cancelled), "
            f"{counts['message_events']} provider answer(s), {counts['contact_events']} "
            "consent event(s) kept without the person"
        )
        if options["dry_run"]:
            self.stdout.write(f"Would erase {summary}.")
            return
        if options["interactive"] and not self.confirmed(summary):
            raise CommandError("Nothing was erased.")
        try:
            done = erase_contact(contact, reason=options["reason"])
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from exc
        self.stdout.write(
            f"Erased contact #{done['contact_id']}: {done['messages']} message(s) blanked, "
            f"{done['messages_cancelled']} cancelled, {done['message_events']} provider "
            f"answer(s) cleared."
        )

    def find(self, phone: str | None, pk: int | None) -> Contact:
        if pk is not None:
            contact = Contact.objects.filter(pk=pk).first()
        else:
            try:
                contact = Contact.objects.filter(phone=normalize_phone(phone)).first()
            except ValidationError as exc:
                raise CommandError(" ".join(exc.messages)) from exc
        if contact is None:
            which = f"id {pk}" if pk is not None else f"phone {phone}"
            raise CommandError(f"No contact with {which}.")
        return contact

    def export(self, contact: Contact, path: str) -> None:
        """Write the contact's data as JSON to ``path`` (readable by its owner only)."""
        text = json.dumps(export_contact_data(contact), ensure_ascii=False, indent=2)
        if path == "-":
            sys.stdout.write(text + "\n")  # the data itself, not the command's messages
            return
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                file.write(text + "\n")
        except OSError as exc:
            raise CommandError(f"Cannot write {path}: {exc.strerror or exc}") from exc
        self.stderr.write(f"Exported the contact's data to {path}.")

    def confirmed(self, summary: str) -> bool:
        answer = input(f"Erase {summary}?\nThis cannot be undone. Type 'yes' to go on: ")
        return answer.strip().lower() == "yes"
