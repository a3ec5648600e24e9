"""Writing imported rows: contacts matched by phone, groups resolved, a batch at a time.

A known phone updates its contact (the columns present in the file overwrite, absent columns are
kept, groups are added and never removed); a new phone creates one. Per batch: one query for the
existing contacts, one for their memberships, one INSERT of the new contacts
(:class:`crm_sms.bulk.RowInserter`), one prepared UPDATE per set of changed fields
(:func:`crm_sms.bulk.update_rows`) and one INSERT of the new memberships.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple

from django.utils import timezone
from django.utils.translation import gettext as _

from ..bulk import RowInserter, update_rows
from ..consent import SOURCE_IMPORT, give_consent, withdraw_consent
from ..models import Contact, ContactGroup
from ..quiet_hours import fill_time_zones
from .cleaning import (
    CONSENT,
    FULL_NAME,
    IMPORT_FIELDS,
    TIME_ZONE,
    RowError,
    cell_text,
    clean_row,
    preview_value,
)

if TYPE_CHECKING:
    from . import ImportResult

#: How many error rows a result keeps (all are counted); warnings alike.
MAX_KEPT_ERRORS = 10_000
#: The check page shows the first this many good rows as they will be imported…
PREVIEW_ROWS = 10
#: …and the first this many rows whose phone is a known contact's (they update it).
MATCHES_SHOWN = 10

#: Contact fields compared and written on update (the phone is the key; groups are apart).
SCALAR_FIELDS = (*(f for f in IMPORT_FIELDS if f not in ("phone", "groups")), TIME_ZONE)
_NAME_FIELDS = ("last_name", "first_name", "middle_name")


class Row(NamedTuple):
    """A good row: its line, its cleaned values, its phone as the file writes it."""

    line: int
    data: dict[str, Any]
    written: str


class ContactWriter:
    """The running state of one import: phones seen, groups known, the result so far.

    ``accept_row`` cleans a row and keeps it or records why not; ``write_batch`` writes kept
    rows (with ``dry_run`` it only counts what it would write).
    """

    def __init__(self, result: ImportResult, columns: dict[int, str], group: str, dry_run: bool):
        self.result = result
        self.columns = columns
        self.group = group
        self.dry_run = dry_run
        self.seen: dict[str, int] = {}  # phone -> line of its first row
        self.group_ids: dict[str, int | None] = {}  # name -> id (None: would be created)
        self.phone_position = next(p for p, name in columns.items() if name == "phone")
        # Rows of the preview by line: what happens to them is known when their batch is written.
        self.previewed: dict[int, dict[str, Any]] = {}
        in_file = set(columns.values())
        self.fields_in_file = tuple(
            f for f in SCALAR_FIELDS if f in in_file or (FULL_NAME in in_file and f in _NAME_FIELDS)
        )

    # --- rows -----------------------------------------------------------------------------
    def add_error(self, error: RowError) -> None:
        if len(self.result.errors) < MAX_KEPT_ERRORS:
            self.result.errors.append(error)

    def add_warning(self, warning: RowError) -> None:
        if len(self.result.warnings) < MAX_KEPT_ERRORS:
            self.result.warnings.append(warning)

    def accept_row(self, line: int, values: list[Any]) -> Row | None:
        """The row cleaned, or None when it is bad or repeats an earlier phone (reported).
        A good row's warnings (a cell left out) are reported too."""
        result = self.result
        result.rows += 1
        data, problems = clean_row(line, values, self.columns)
        errors = [p for p in problems if not p.warning]
        phone = data.get("phone")
        position = self.phone_position
        written = cell_text(values[position] if position < len(values) else None)
        if phone and not errors and phone in self.seen:
            # The phone as written: "8 (900) 123-42-12" on line 7 may repeat "+79001234212".
            message = _("Repeats the phone of line %(first)d (%(phone)s); this row is skipped.")
            errors.append(
                RowError(
                    line,
                    message % {"phone": phone, "first": self.seen[phone]},
                    "phone",
                    written,
                    "duplicate",
                )
            )
            result.duplicates += 1
        if errors:  # a skipped row's warnings say nothing more: it is not imported
            result.skipped += 1
            for error in errors:
                self.add_error(error)
            return None
        if problems:
            result.warned += 1
            for warning in problems:
                self.add_warning(warning)
        self.seen[phone] = line
        if self.group:
            groups = data.setdefault("groups", [])
            if self.group not in groups:
                groups.append(self.group)
        if len(result.preview) < PREVIEW_ROWS:
            self.add_preview(line, data, written)
        return Row(line, data, written)

    def add_preview(self, line: int, data: dict[str, Any], written: str) -> None:
        """Keep a good row for the check page, as it will be imported (its fate comes with
        its batch: new contact, update or no change)."""
        entry = {
            "line": line,
            "written": written,
            "phone": data["phone"],
            "values": {k: preview_value(k, v) for k, v in data.items() if k != "phone"},
            "action": "",
            "contact_id": None,
            "contact": "",
        }
        self.result.preview.append(entry)
        self.previewed[line] = entry

    def note_fate(self, row: Row, contact: dict[str, Any] | None, action: str) -> None:
        """What happens to ``row``, for its preview entry and, when it is a known contact's
        phone, the list of such rows (the first MATCHES_SHOWN)."""
        label = ""
        if contact is not None:
            name = " ".join(filter(None, (contact["last_name"], contact["first_name"])))
            label = name or contact["phone"]
        entry = self.previewed.pop(row.line, None)
        if entry is not None:
            entry.update(action=action, contact_id=contact and contact["id"], contact=label)
        if contact is not None and len(self.result.matches) < MATCHES_SHOWN:
            self.result.matches.append(
                {
                    "line": row.line,
                    "written": row.written,
                    "phone": row.data["phone"],
                    "action": action,
                    "contact_id": contact["id"],
                    "contact": label,
                }
            )

    # --- a batch --------------------------------------------------------------------------
    def write_batch(self, batch: list[Row]) -> None:
        """Create, update and add to groups the contacts of ``batch`` (rows of one import)."""
        if not batch:
            return
        now = timezone.now()
        existing = self.existing_contacts([row.data["phone"] for row in batch])
        group_names = {g for row in batch for g in row.data.get("groups", ())}
        self.resolve_groups(group_names)
        memberships = self.memberships(existing) if group_names and existing else set()
        new_rows: list[dict[str, Any]] = []
        updates: dict[int, dict[str, Any]] = {}
        for row in batch:
            data = row.data
            contact = existing.get(data["phone"])
            if contact is None:
                new_rows.append(data)
                self.result.created += 1
                self.note_fate(row, None, "new")
                continue
            changes = self.changes(contact, data, now)
            if changes:
                updates[contact["id"]] = changes
            if changes or self.new_groups(contact["id"], data, memberships):
                self.result.updated += 1
                self.note_fate(row, contact, "update")
            else:
                self.result.unchanged += 1
                self.note_fate(row, contact, "unchanged")
        if self.dry_run:
            return
        self.insert_contacts(new_rows, now)
        update_rows(Contact, updates)
        if new_rows:
            # Bulk INSERTs skip Contact.save(), which guesses the zone from a fixed-line phone.
            fill_time_zones(Contact.objects.filter(phone__in=[d["phone"] for d in new_rows]))
        self.record_consents(batch)
        wanted = [(r.data["phone"], r.data["groups"]) for r in batch if r.data.get("groups")]
        if wanted:
            ids = {phone: contact["id"] for phone, contact in existing.items()}
            if new_rows:
                new_phones = [data["phone"] for data in new_rows]
                ids.update(Contact.objects.filter(phone__in=new_phones).values_list("phone", "id"))
            self.add_memberships(wanted, ids, memberships)

    def record_consents(self, batch: list[Row]) -> None:
        """The consent column: given (at its date, or now) or withdrawn, with the history
        events of ``crm_sms.consent``; an empty cell leaves the contact as it is."""
        groups: dict[tuple[bool, Any], list[str]] = defaultdict(list)
        for row in batch:
            given, at = row.data.get(CONSENT) or (None, None)
            if given is not None:
                groups[(given, at)].append(row.data["phone"])
        for (given, at), phones in groups.items():
            contacts = Contact.objects.filter(phone__in=phones)
            reason = _("imported from a file")
            if given:
                give_consent(contacts, source=SOURCE_IMPORT, reason=reason, at=at)
            else:
                withdraw_consent(contacts, source=SOURCE_IMPORT, reason=reason)

    def existing_contacts(self, phones: list[str]) -> dict[str, dict[str, Any]]:
        """The known contacts among ``phones``: phone -> their id, phone, name (to show which
        contact a row updates) and the file's fields."""
        names = [f for f in ("last_name", "first_name") if f not in self.fields_in_file]
        fields = ("id", "phone", *names, *self.fields_in_file)
        rows = Contact.objects.filter(phone__in=phones).values(*fields)
        return {row["phone"]: row for row in rows}

    def memberships(self, existing: dict[str, dict[str, Any]]) -> set[tuple[int, int]]:
        """(contact id, group id) pairs the ``existing`` contacts already have."""
        through = Contact.groups.through
        ids = [contact["id"] for contact in existing.values()]
        return set(
            through.objects.filter(contact_id__in=ids).values_list("contact_id", "contactgroup_id")
        )

    def resolve_groups(self, names: set[str]) -> None:
        """Learn the ids of the groups ``names``, creating the missing ones (not in a dry run)."""
        missing = [n for n in names if n not in self.group_ids]
        if not missing:
            return
        found = dict(ContactGroup.objects.filter(name__in=missing).values_list("name", "id"))
        new = [n for n in missing if n not in found]
        if new:
            self.result.groups_created.extend(sorted(new))
            if not self.dry_run:
                ContactGroup.objects.bulk_create(
                    [ContactGroup(name=n) for n in new], ignore_conflicts=True
                )
                found.update(ContactGroup.objects.filter(name__in=new).values_list("name", "id"))
        for name in missing:
            self.group_ids[name] = found.get(name)

    def changes(
        self, contact: dict[str, Any], data: dict[str, Any], now: datetime
    ) -> dict[str, Any]:
        """The fields of ``contact`` the row changes, with ``updated_at`` (and ``opted_out_at``
        when ``opted_out`` flips); empty when the row changes nothing."""
        changed = {
            name: data[name]
            for name in self.fields_in_file
            if name in data
            and contact[name] != data[name]
            # A region the file names but we cannot place keeps the zone the contact has.
            and not (name == TIME_ZONE and not data[name])
        }
        if not changed:
            return changed
        if "opted_out" in changed:
            changed["opted_out_at"] = now if changed["opted_out"] else None
        changed["updated_at"] = now
        return changed

    def new_groups(self, contact_id: int, data: dict[str, Any], memberships: set) -> list[str]:
        """The row's groups the contact is not in yet (a group still to be created counts)."""
        ids = self.group_ids
        return [
            g
            for g in data.get("groups", ())
            if ids.get(g) is None or (contact_id, ids[g]) not in memberships
        ]

    def insert_contacts(self, rows: list[dict[str, Any]], now: datetime) -> None:
        """INSERT new contacts: the file's fields per row, the model's defaults for the rest."""
        if not rows:
            return
        fields = self.fields_in_file
        with_opt_out = "opted_out" in fields
        varying = ["phone", *fields, *(["opted_out_at"] if with_opt_out else [])]
        meta = Contact._meta
        constants: dict[str, Any] = {
            f.name: f.get_default()
            for f in meta.concrete_fields
            if not f.primary_key and f.name not in varying
        }
        constants.update(created_at=now, updated_at=now)
        inserter = RowInserter(Contact, constants, varying)
        defaults = {name: meta.get_field(name).get_default() for name in fields}
        prepared_now = inserter.prepare("opted_out_at", now)  # once, not per row

        def values(data: dict[str, Any]) -> tuple:
            row = (data["phone"], *[data.get(name, defaults[name]) for name in fields])
            if with_opt_out:
                row += (prepared_now if data.get("opted_out") else None,)
            return row

        inserter.insert(values(data) for data in rows)

    def add_memberships(
        self,
        wanted: list[tuple[str, list[str]]],
        ids: dict[str, int],
        memberships: set[tuple[int, int]],
    ) -> None:
        """Add each phone's contact to its ``wanted`` groups it is not in yet."""
        through = Contact.groups.through
        pairs = [(ids[phone], self.group_ids[name]) for phone, names in wanted for name in names]
        # ignore_conflicts: someone may add the same membership in the admin meanwhile.
        through.objects.bulk_create(
            [
                through(contact_id=contact, contactgroup_id=group)
                for contact, group in pairs
                if (contact, group) not in memberships
            ],
            batch_size=1000,
            ignore_conflicts=True,
        )
