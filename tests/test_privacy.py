"""152-FZ (issue 13.6): a contact's data exported as JSON and erased on request, with the counts
that hold no person kept; ``manage.py sms_erase_contact``. Runs on SQLite and, with
DATABASE_URL=postgres://…, on PostgreSQL."""

from __future__ import annotations

import json
import os
import stat

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command

from crm_sms.consent import give_consent, opt_out
from crm_sms.models import (
    Campaign,
    Contact,
    ContactEvent,
    ContactEventKind,
    ContactGroup,
    Message,
    MessageEvent,
    MessageStatus,
)
from crm_sms.privacy import EXPORT_FORMAT, erase_contact, erasure_counts, export_contact_data

PHONE = "+79001234212"
M = MessageStatus


@pytest.fixture
def staff(db):
    return get_user_model().objects.create_user("operator", password="x", is_staff=True)


@pytest.fixture
def contact(db, staff):
    group = ContactGroup.objects.create(name="VIP")
    contact = Contact.objects.create(
        first_name="Анна",
        last_name="Петрова",
        middle_name="Сергеевна",
        phone=PHONE,
        email="anna@example.com",
        notes="Звонила 12.03, просила скидку",
        external_id="1C-000123",
    )
    contact.groups.add(group)
    give_consent([contact], source="web form", reason="Анкета на сайте", by=staff)
    return contact


@pytest.fixture
def history(contact):
    """A campaign with messages in every interesting state, and one message to the phone with
    no contact link (another model's campaign)."""
    campaign = Campaign.objects.create(name="Весна", text="Скидка", recipients_count=3)
    other = Contact.objects.create(phone="+79001112233")
    rows = {
        "sent": Message.objects.create(
            campaign=campaign,
            contact=contact,
            phone=PHONE,
            text="Анна, скидка 20%",
            provider="smsc",
            status=M.DELIVERED,
            provider_message_id="Ab12-79001234212",
            last_response={"phone": "79001234212", "status": 1},
            segments=1,
        ),
        "queued": Message.objects.create(
            campaign=campaign, contact=contact, phone=PHONE, text="Анна, ещё", provider="smsc"
        ),
        "uncertain": Message.objects.create(
            contact=contact, phone=PHONE, text="Код 1234", provider="smsc", status=M.UNCERTAIN
        ),
        "unlinked": Message.objects.create(
            phone=PHONE, text="Ваш заказ готов", provider="smsc", status=M.SENT, segments=2
        ),
        "someone else": Message.objects.create(
            campaign=campaign, contact=other, phone=other.phone, text="Hi", provider="smsc"
        ),
    }
    MessageEvent.objects.create(
        message=rows["sent"],
        source="callback",
        old_status=M.SENT,
        new_status=M.DELIVERED,
        payload={"id": "Ab12", "phone": "79001234212"},
    )
    return rows


def test_export_has_everything_stored_about_the_contact(contact, history, staff):
    data = export_contact_data(contact)
    assert json.loads(json.dumps(data)) == data  # JSON as it is
    assert data["format"] == EXPORT_FORMAT
    fields = data["contact"]
    assert (fields["phone"], fields["email"], fields["groups"]) == (
        PHONE,
        "anna@example.com",
        ["VIP"],
    )
    assert fields["notes"].startswith("Звонила") and fields["consent_source"] == "web form"
    [event] = data["consent_history"]
    assert (event["kind"], event["actor"], event["reason"]) == (
        "consent_given",
        "operator",
        "Анкета на сайте",
    )
    texts = {m["text"] for m in data["messages"]}
    assert texts == {"Анна, скидка 20%", "Анна, ещё", "Код 1234", "Ваш заказ готов"}
    [sent] = [m for m in data["messages"] if m["status"] == "delivered"]
    assert sent["campaign"]["name"] == "Весна"
    assert sent["last_response"] == {"phone": "79001234212", "status": 1}
    assert sent["events"][0]["payload"] == {"id": "Ab12", "phone": "79001234212"}
    assert data["other"] == {}


def test_erase_blanks_the_person_and_keeps_the_counts(contact, history, staff):
    campaign = history["sent"].campaign
    before = {
        "messages": Message.objects.count(),
        "events": MessageEvent.objects.count(),
        "segments": sorted(Message.objects.values_list("segments", flat=True)),
    }
    done = erase_contact(contact, by=staff, reason="Заявление от 01.12")
    assert done["messages"] == 4 and done["messages_cancelled"] == 2
    assert done["message_events"] == 1 and done["contact_events"] == 1
    assert not Contact.objects.filter(pk=contact.pk).exists()
    assert ContactGroup.objects.get().contacts.count() == 0
    # The counts are as they were; the campaign's figures do not change.
    assert Message.objects.count() == before["messages"]
    assert sorted(Message.objects.values_list("segments", flat=True)) == before["segments"]
    campaign.refresh_from_db()
    assert campaign.recipients_count == 3
    statuses = {key: Message.objects.get(pk=m.pk).status for key, m in history.items()}
    assert statuses == {
        "sent": M.DELIVERED,
        "queued": M.CANCELLED,
        "uncertain": M.CANCELLED,
        "unlinked": M.SENT,
        "someone else": M.QUEUED,
    }
    # No trace of the person in the messages and their events.
    for key in ("sent", "queued", "uncertain", "unlinked"):
        message = Message.objects.get(pk=history[key].pk)
        assert (message.phone, message.text, message.contact_id) == ("", "", None)
        assert (message.last_response, message.provider_message_id) == (None, "")
    assert MessageEvent.objects.filter(message=history["sent"]).get().payload is None
    assert not Message.objects.filter(phone=PHONE).exists()
    assert Message.objects.get(pk=history["someone else"].pk).text == "Hi"
    # The consent event stays without the person; the erasure is recorded.
    consent = ContactEvent.objects.get(kind=ContactEventKind.CONSENT_GIVEN)
    assert (consent.contact_id, consent.reason, consent.source) == (None, "", "web form")
    erased = ContactEvent.objects.get(kind=ContactEventKind.ERASED)
    assert (erased.contact_id, erased.actor, erased.reason) == (None, staff, "Заявление от 01.12")
    assert erased.details["messages"] == 4 and erased.details["contact_id"] == contact.pk


def test_every_trace_of_the_phone_and_the_name_is_gone(contact, history, staff):
    erase_contact(contact, by=staff)
    dump = json.dumps(
        [
            list(Message.objects.values()),
            list(MessageEvent.objects.values()),
            list(ContactEvent.objects.values()),
            list(Contact.objects.values()),
        ],
        default=str,
        ensure_ascii=False,
    )
    for trace in ("9001234212", "Петрова", "anna@example.com", "Анна", "1C-000123"):
        assert trace not in dump


def test_erase_waits_for_a_message_being_sent(contact, history):
    Message.objects.filter(pk=history["queued"].pk).update(status=M.SENDING)
    with pytest.raises(ValidationError, match="being sent"):
        erase_contact(contact)
    assert Contact.objects.filter(pk=contact.pk).exists()
    assert Message.objects.get(pk=history["sent"].pk).phone == PHONE


def test_an_opted_out_contact_is_erased_too(contact):
    opt_out([contact], source="sms reply", reason="STOP")
    erase_contact(contact)
    kinds = sorted(ContactEvent.objects.values_list("kind", flat=True))
    assert kinds == ["consent_given", "consent_withdrawn", "erased", "opted_out"]
    assert not ContactEvent.objects.exclude(contact=None).exists()


def test_erasure_counts_change_nothing(contact, history):
    counts = erasure_counts(contact)
    assert counts == {
        "contact_id": contact.pk,
        "messages": 4,
        "messages_cancelled": 2,
        "messages_sending": 0,
        "message_events": 1,
        "contact_events": 1,
    }
    assert Message.objects.filter(phone=PHONE).count() == 4


# --- the command -------------------------------------------------------------------------------


def test_command_dry_run_exports_and_changes_nothing(contact, history, tmp_path, capsys):
    path = tmp_path / "anna.json"
    call_command("sms_erase_contact", "--phone", "8 (900) 123-42-12", "--dry-run", "--export", path)
    out = capsys.readouterr().out
    assert "Would erase" in out and "4 message(s)" in out
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["contact"]["last_name"] == "Петрова"
    assert Contact.objects.filter(pk=contact.pk).exists()


def test_command_erases_by_id(contact, history, capsys):
    call_command("sms_erase_contact", "--id", str(contact.pk), "--no-input", "--reason", "письмо")
    assert "Erased contact" in capsys.readouterr().out
    assert not Contact.objects.filter(pk=contact.pk).exists()
    assert ContactEvent.objects.get(kind=ContactEventKind.ERASED).reason == "письмо"


def test_command_asks_first(contact, monkeypatch):
    monkeypatch.setattr("builtins.input", lambda prompt: "no")
    with pytest.raises(CommandError, match="Nothing was erased"):
        call_command("sms_erase_contact", "--id", str(contact.pk))
    assert Contact.objects.filter(pk=contact.pk).exists()


def test_command_export_to_stdout(contact, capsys):
    call_command("sms_erase_contact", "--id", str(contact.pk), "--dry-run", "--export", "-")
    out = capsys.readouterr().out
    assert json.loads(out[: out.rindex("}") + 1])["contact"]["phone"] == PHONE


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--phone", "+79005556677"], "No contact with phone"),
        (["--id", "999999"], "No contact with id"),
        (["--phone", "abc"], "not a phone number"),
    ],
)
def test_command_refusals(db, args, message):
    with pytest.raises(CommandError, match=message):
        call_command("sms_erase_contact", *args, "--no-input")


def test_command_says_when_a_message_is_being_sent(contact, history):
    Message.objects.filter(pk=history["queued"].pk).update(status=M.SENDING)
    with pytest.raises(CommandError, match="being sent"):
        call_command("sms_erase_contact", "--id", str(contact.pk), "--no-input")
