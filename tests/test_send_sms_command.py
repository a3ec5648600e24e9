"""``manage.py send_sms TO TEXT [--provider] [--sender]``."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest
from django.core.management import CommandError, call_command

from crm_sms.models import Message, MessageStatus
from tests.fixtures_outbox import ROOT, subprocess_env

pytestmark = pytest.mark.django_db


def test_sends_now_and_prints_msg_id_and_status(megafon_provider):
    out = io.StringIO()
    call_command("send_sms", "8 (900) 123-42-12", "Код: 1234", stdout=out)
    message = Message.objects.get()
    assert message.status == MessageStatus.SENT
    assert f"msg_id={message.msg_id}" in out.getvalue()
    assert "status=sent" in out.getvalue()
    assert megafon_provider.accepted[message.msg_id]["message"] == "Код: 1234"
    assert megafon_provider.accepted[message.msg_id]["from"] == "Test"


def test_sender_and_provider_options(locmem_provider):
    out = io.StringIO()
    call_command(
        "send_sms", "+79001234212", "Hi", "--sender", "Shop", "--provider", "default", stdout=out
    )
    assert [(s.sender, s.to) for s in locmem_provider] == [("Shop", "+79001234212")]


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["12", "Hi"], "phone"),
        (["+79001234212", ""], "empty"),
        (["+79001234212", "Hi", "--sender", "Johnny_Viper"], "sender"),
        (["+79001234212", "Hi", "--provider", "nope"], "nope"),
    ],
)
def test_invalid_input_is_a_clear_error_and_nothing_is_stored_or_sent(
    megafon_provider, args, fragment
):
    with pytest.raises(CommandError) as info:
        call_command("send_sms", *args, stdout=io.StringIO())
    assert fragment in str(info.value).lower()
    assert "Traceback" not in str(info.value)
    assert Message.objects.count() == 0
    assert megafon_provider.requests == []


def test_a_rejected_message_prints_the_error_and_fails(megafon_provider):
    megafon_provider.configure(codes={"79001234212": 1282})
    with pytest.raises(CommandError) as info:
        call_command("send_sms", "+79001234212", "Hi", stdout=io.StringIO())
    assert "status=failed" in str(info.value)
    assert "1282" in str(info.value)
    assert Message.objects.get().status == MessageStatus.FAILED


@pytest.mark.django_db(transaction=True)
def test_the_command_exits_non_zero_on_bad_input(megafon_provider):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "send_sms", "not a phone", "Hi"],
        cwd=ROOT,
        env=subprocess_env(megafon_provider, LANGUAGE_CODE="en"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "CommandError" in proc.stderr or "phone" in proc.stderr.lower()
    assert "Traceback" not in proc.stderr
    assert Message.objects.count() == 0
    assert megafon_provider.requests == []
