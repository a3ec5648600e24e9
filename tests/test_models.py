import pytest
from django.core.management import call_command
from django.db import IntegrityError, transaction

from crm_sms.models import (
    MSG_ID_ALPHABET,
    Contact,
    ContactGroup,
    Message,
    MessageStatus,
    new_msg_id,
)


def test_msg_id_fits_megafon():
    ids = {new_msg_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(len(i) == 16 and set(i) <= set(MSG_ID_ALPHABET) for i in ids)


@pytest.mark.django_db
def test_contact_phone_is_unique():
    Contact.objects.create(phone="+79001234212")
    with pytest.raises(IntegrityError), transaction.atomic():
        Contact.objects.create(phone="+79001234212")


@pytest.mark.django_db
def test_message_msg_id_is_assigned_and_unique():
    message = Message.objects.create(phone="+79001234212", text="x", provider="default")
    assert len(message.msg_id) == 16
    assert message.status == MessageStatus.QUEUED
    with pytest.raises(IntegrityError), transaction.atomic():
        Message.objects.create(
            phone="+79001234213", text="x", provider="default", msg_id=message.msg_id
        )


@pytest.mark.django_db
def test_opted_out_at_follows_opted_out():
    contact = Contact.objects.create(phone="+79001234212", opted_out=True)
    assert contact.opted_out_at is not None
    contact.opted_out = False
    contact.save()
    assert contact.opted_out_at is None


@pytest.mark.django_db
def test_deleting_a_contact_keeps_its_messages():
    contact = Contact.objects.create(phone="+79001234212")
    message = Message.objects.create(
        phone=contact.phone, text="x", provider="default", contact=contact
    )
    contact.delete()
    message.refresh_from_db()
    assert message.contact is None


@pytest.mark.django_db
def test_demo_data_is_realistic_and_idempotent():
    call_command("load_demo_data")
    assert Contact.objects.count() == 200
    assert ContactGroup.objects.count() == 4
    assert Contact.objects.filter(groups__isnull=False).distinct().count() > 100
    assert all(p.startswith("+79") for p in Contact.objects.values_list("phone", flat=True))
    call_command("load_demo_data")
    assert Contact.objects.count() == 200


@pytest.mark.django_db
def test_demo_superuser_prints_a_working_login(capsys):
    from django.contrib.auth import authenticate

    call_command("demo_superuser")
    out = capsys.readouterr().out
    password = out.split("Password: ")[1].split()[0]
    assert authenticate(username="admin", password=password).is_superuser


@pytest.mark.django_db
def test_migrations_are_complete():
    call_command("makemigrations", "crm_sms", "--check", "--dry-run")
