"""Replies (issue 13.3): incoming SMS through the real inbound URLs (Twilio signed with the
emulator's signer, SMSC signed with its md5), opt-out keywords in Russian and English, the
confirmation sent once, idempotency, unknown phones, the sandbox posting over real HTTP, and the
unsubscribe phrase of advertising texts."""

from __future__ import annotations

import threading
from urllib.parse import urlencode

import pytest
from django.core.management import call_command
from django.db import connection
from django.urls import reverse

from crm_sms.backends.base import InboundMessage
from crm_sms.conf import parse_sms_url, settings_from_env
from crm_sms.inbound import (
    confirmation_msg_id,
    handle_inbound,
    inbound_url,
    is_opt_out,
    mask_phone,
    normalize_reply,
    unsubscribe_config,
    with_unsubscribe,
)
from crm_sms.models import Contact, ContactEvent, ContactEventKind, Message, MessageStatus
from crm_sms.sandbox import SandboxServer

SID = "AC" + "0123456789abcdef" * 2
TOKEN = "twilio-auth-token"
SMSC_LOGIN, SMSC_PASSWORD = "smsc-login", "smsc-password"
CALLBACK = "cb-token"
PHONE = "+79001234212"
OUR_NUMBER = "+15005550006"
REPLY = "Вы отписаны от SMS. Подписаться снова: +7 495 000-00-00"


def url(provider: str, token: str = CALLBACK) -> str:
    return reverse("crm_sms:inbound", kwargs={"provider": provider, "token": token})


@pytest.fixture
def providers(settings, db):
    """twilio, smsc (neither reached: confirmations are only queued) and locmem (no inbound)."""
    settings.CRM_SMS = {
        "PROVIDERS": {
            "twilio": parse_sms_url(
                f"twilio+http://{SID}:{TOKEN}@127.0.0.1:9/?sender=%2B15005550006"
            ),
            "smsc": parse_sms_url(
                f"smsc+http://{SMSC_LOGIN}:{SMSC_PASSWORD}@127.0.0.1:9/?sender=Shop"
            ),
            "default": {"BACKEND": "crm_sms.backends.locmem.LocmemBackend"},
        },
        "CALLBACK_TOKEN": CALLBACK,
        "PUBLIC_URL": "https://crm.example.com",
    }
    return settings


@pytest.fixture
def reply(providers):
    providers.CRM_SMS = {**providers.CRM_SMS, "OPT_OUT_REPLY": REPLY}
    return providers


@pytest.fixture
def contact(db):
    return Contact.objects.create(first_name="Анна", last_name="Петрова", phone=PHONE)


@pytest.fixture(scope="module")
def twilio():
    """The Twilio emulator (not started: only its signer is used)."""
    return SandboxServer(provider="twilio", login=SID, password=TOKEN).provider


@pytest.fixture(scope="module")
def smsc():
    return SandboxServer(provider="smsc", login=SMSC_LOGIN, password=SMSC_PASSWORD).provider


def post_twilio(client, twilio, text, phone=PHONE, sid="", token=CALLBACK, signed_for=None):
    """Post an incoming message as Twilio signs it for this site's inbound URL."""
    path = url("twilio", token)
    body, headers = twilio.inbound_request(
        signed_for or f"http://testserver{path}", phone, OUR_NUMBER, text, sid
    )
    return client.post(
        path,
        body,
        content_type=headers["Content-Type"],
        headers={"X-Twilio-Signature": headers["X-Twilio-Signature"]},
    )


def post_smsc(client, smsc, text, phone=PHONE, path=None, **kwargs):
    body, headers = smsc.inbound_request(phone, text, "79010000000", **kwargs)
    return client.post(path or url("smsc"), body, content_type=headers["Content-Type"])


def opted_out(contact: Contact) -> bool:
    contact.refresh_from_db()
    return contact.opted_out


# --- keywords ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["STOP", "stop", " Stop! ", "СТОП", "стоп.", "Стоп!!!", "ОТПИСКА", "отписаться", "Unsubscribe"],
)
def test_keywords_in_russian_and_english(settings, text):
    settings.CRM_SMS = {}
    assert is_opt_out(text)


@pytest.mark.parametrize(
    "text", ["", "stop please", "Стоп, пожалуйста", "STOPPED", "S.T.O.P", "спасибо", "STOP" * 30]
)
def test_other_texts_are_not_keywords(settings, text):
    settings.CRM_SMS = {}
    assert not is_opt_out(text)


def test_normalize_reply():
    assert normalize_reply("  «Стоп»!\u00a0\u200b") == "стоп"
    assert normalize_reply("Stop  all 🛑") == "stop all"


def test_keywords_are_configurable(settings):
    settings.CRM_SMS = {"OPT_OUT_KEYWORDS": ["Хватит", "stop all"]}
    assert is_opt_out("ХВАТИТ!") and is_opt_out("Stop, all")
    assert not is_opt_out("STOP")


def test_environment_variables():
    env = {
        "SMS_OPT_OUT_KEYWORDS": "STOP, ХВАТИТ ,,",
        "SMS_OPT_OUT_REPLY": "Отписаны",
        "SMS_UNSUBSCRIBE_TEXT": "Отказ: STOP",
    }
    result = settings_from_env(env)
    assert result["OPT_OUT_KEYWORDS"] == ["STOP", "ХВАТИТ"]
    assert (result["OPT_OUT_REPLY"], result["UNSUBSCRIBE_TEXT"]) == ("Отписаны", "Отказ: STOP")


# --- Twilio through the inbound URL ------------------------------------------------------------


def test_twilio_stop_opts_the_contact_out_with_an_event(providers, contact, client, twilio):
    response = post_twilio(client, twilio, "STOP", sid="SM" + "1" * 32)
    assert response.status_code == 200
    assert response["Content-Type"] == "text/xml; charset=utf-8"  # empty TwiML: no auto reply
    assert opted_out(contact)
    event = ContactEvent.objects.get(contact=contact, kind=ContactEventKind.OPTED_OUT)
    assert event.source == "sms reply"
    assert "STOP" in event.reason and "SM" + "1" * 32 in event.reason
    assert not Message.objects.exists()  # no OPT_OUT_REPLY: nothing is sent


@pytest.mark.parametrize("text", ["Стоп", "ОТПИСКА", "stop!", "Отписаться."])
def test_twilio_russian_and_english_replies(providers, contact, client, twilio, text):
    assert post_twilio(client, twilio, text).status_code == 200
    assert opted_out(contact)


def test_confirmation_is_queued_once_for_a_repeated_webhook(reply, contact, client, twilio):
    sid = "SM" + "2" * 32
    for _ in range(3):
        assert post_twilio(client, twilio, "СТОП", sid=sid).status_code == 200
    [message] = Message.objects.all()
    assert (message.phone, message.provider, message.status) == (PHONE, "twilio", "queued")
    assert message.text == REPLY and message.sender == OUR_NUMBER
    assert message.contact == contact  # queued after the opt-out, which cancels queued ones
    assert ContactEvent.objects.filter(kind=ContactEventKind.OPTED_OUT).count() == 1


def test_a_new_stop_is_confirmed_again_but_opts_out_once(reply, contact, client, twilio):
    post_twilio(client, twilio, "STOP", sid="SM" + "3" * 32)
    post_twilio(client, twilio, "STOP", sid="SM" + "4" * 32)
    assert Message.objects.count() == 2
    assert ContactEvent.objects.filter(kind=ContactEventKind.OPTED_OUT).count() == 1


def test_the_opt_out_cancels_queued_messages_but_not_the_confirmation(
    reply, contact, client, twilio
):
    earlier = Message.objects.create(contact=contact, phone=PHONE, text="Sale!", provider="twilio")
    post_twilio(client, twilio, "STOP")
    earlier.refresh_from_db()
    assert earlier.status == MessageStatus.CANCELLED
    assert Message.objects.get(text=REPLY).status == MessageStatus.QUEUED


def test_other_texts_are_ignored_with_200(reply, contact, client, twilio, caplog):
    response = post_twilio(client, twilio, "Стоп, а когда доставка?")
    assert response.status_code == 200
    assert not opted_out(contact)
    assert not Message.objects.exists()
    assert "no opt-out keyword" in caplog.text and "доставка" not in caplog.text


def test_unknown_phone_is_200_and_changes_nothing(reply, contact, client, twilio, caplog):
    response = post_twilio(client, twilio, "STOP", phone="+79005556677")
    assert response.status_code == 200
    assert not opted_out(contact)
    assert Contact.objects.count() == 1 and not Message.objects.exists()
    assert "no contact has" in caplog.text and "+79005556677" not in caplog.text


def test_a_contact_stored_in_another_notation_is_found(providers, client, twilio):
    odd = Contact.objects.create(phone="8 (900) 123-42-12")
    assert post_twilio(client, twilio, "STOP").status_code == 200
    assert opted_out(odd)


def test_forged_twilio_signature_is_403(providers, contact, client, twilio):
    response = post_twilio(client, twilio, "STOP", signed_for="http://testserver/elsewhere/")
    assert response.status_code == 403
    assert not opted_out(contact)


def test_wrong_token_is_404(providers, contact, client, twilio):
    assert post_twilio(client, twilio, "STOP", token="guess").status_code == 404
    assert not opted_out(contact)


def test_twilio_message_without_from_is_400(providers, contact, client, twilio):
    assert post_twilio(client, twilio, "STOP", phone="").status_code == 400


def test_get_is_405_and_a_provider_without_inbound_is_404(providers, client):
    assert client.get(url("twilio")).status_code == 405
    assert client.post(url("default"), {"text": "STOP"}).status_code == 404
    assert client.post(url("nosuch"), {"text": "STOP"}).status_code == 404


def test_a_database_error_is_500_so_the_provider_posts_again(
    providers, contact, client, twilio, monkeypatch
):
    def broken(*args, **kwargs):
        raise RuntimeError("database is down")

    monkeypatch.setattr("crm_sms.consent.opt_out", broken)
    assert post_twilio(client, twilio, "STOP").status_code == 500


# --- SMSC --------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["СТОП", "Отписка", "STOP", "отписаться!"])
def test_smsc_signed_replies(providers, contact, client, smsc, text):
    response = post_smsc(client, smsc, text)
    assert response.status_code == 200 and response.content == b"OK"
    assert opted_out(contact)


def test_smsc_posts_replies_to_its_status_url_too(reply, contact, client, smsc):
    path = reverse("crm_sms:callback", kwargs={"provider": "smsc", "token": CALLBACK})
    assert post_smsc(client, smsc, "СТОП", path=path, message_id="77").status_code == 200
    assert post_smsc(client, smsc, "СТОП", path=path, message_id="77").status_code == 200
    assert opted_out(contact)
    [message] = Message.objects.all()
    assert (message.provider, message.sender, message.text) == ("smsc", "Shop", REPLY)


def test_smsc_windows_1251_reply(providers, contact, client, smsc):
    assert post_smsc(client, smsc, "СТОП", charset="windows-1251").status_code == 200
    assert opted_out(contact)


def test_smsc_forged_md5_is_403(providers, contact, client):
    fields = {"phone": "79001234212", "mes": "STOP", "to": "79010000000", "md5": "0" * 32}
    response = client.post(url("smsc"), urlencode(fields), "application/x-www-form-urlencoded")
    assert response.status_code == 403
    assert not opted_out(contact)


def test_smsc_reply_without_phone_is_400(providers, client):
    response = client.post(url("smsc"), "mes=STOP", "application/x-www-form-urlencoded")
    assert response.status_code == 400


# --- idempotency and the functions -------------------------------------------------------------


def test_handle_inbound_counts(reply, contact):
    messages = [
        InboundMessage(PHONE, OUR_NUMBER, "STOP", "SM1"),
        InboundMessage(PHONE, OUR_NUMBER, "STOP", "SM1"),
        InboundMessage("+79005556677", OUR_NUMBER, "СТОП", "SM2"),
        InboundMessage(PHONE, OUR_NUMBER, "hello", "SM3"),
        InboundMessage("not a phone", OUR_NUMBER, "STOP", "SM4"),
    ]
    counts = handle_inbound(messages, provider="twilio")
    assert counts == {
        "opted_out": 1,
        "contacts": 1,
        "confirmations": 1,
        "repeated": 1,
        "unknown_phone": 1,
        "ignored": 1,
        "invalid_phone": 1,
    }


def test_confirmation_msg_id_is_stable_and_a_msg_id():
    one = InboundMessage(PHONE, OUR_NUMBER, "STOP", "SM1")
    assert confirmation_msg_id("twilio", one) == confirmation_msg_id("twilio", one)
    assert confirmation_msg_id("twilio", one) != confirmation_msg_id("smsc", one)
    assert len(confirmation_msg_id("twilio", one)) == 16
    assert confirmation_msg_id("twilio", one).isalnum()


def test_a_confirmation_the_provider_refuses_is_logged_and_the_opt_out_stays(
    providers, contact, caplog
):
    providers.CRM_SMS = {**providers.CRM_SMS, "OPT_OUT_REPLY": "x" * 2000}
    counts = handle_inbound([InboundMessage(PHONE, OUR_NUMBER, "STOP", "SM9")], provider="twilio")
    assert counts["contacts"] == 1 and counts["confirmations"] == 0
    assert opted_out(contact) and "cannot be sent" in caplog.text


def test_mask_phone():
    assert mask_phone("+79001234212") == "+790******12"
    assert mask_phone("123") == "***"


def test_inbound_url(providers):
    assert inbound_url("smsc") == f"https://crm.example.com/sms/callback/smsc/{CALLBACK}/inbound/"
    providers.CRM_SMS = {**providers.CRM_SMS, "PUBLIC_URL": None}
    assert inbound_url("smsc") is None


@pytest.mark.django_db(transaction=True)
def test_two_copies_at_once_queue_one_confirmation(reply, live_server, twilio):
    """Twilio retries while the first request is still working: both race, one confirms."""
    if connection.vendor != "postgresql":
        pytest.skip("concurrent writers: the PostgreSQL pass (SQLite has one writer)")
    Contact.objects.create(phone=PHONE)
    target = live_server.url + url("twilio")
    body, headers = twilio.inbound_request(target, PHONE, OUR_NUMBER, "STOP", "SM" + "5" * 32)
    import requests

    answers = []

    def post():
        answers.append(requests.post(target, data=body, headers=headers, timeout=10).status_code)

    threads = [threading.Thread(target=post) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers == [200] * 4
    assert Message.objects.count() == 1


# --- the sandbox over real HTTP ----------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("provider", ["twilio", "smsc"])
def test_the_sandbox_posts_a_reply_to_the_site(reply, live_server, provider):
    contact = Contact.objects.create(phone=PHONE)
    login, password = (SID, TOKEN) if provider == "twilio" else (SMSC_LOGIN, SMSC_PASSWORD)
    sandbox = SandboxServer(provider=provider, login=login, password=password)
    sandbox.provider.inbound_url = live_server.url + url(provider)
    response = sandbox.post_inbound(PHONE, "СТОП")
    assert response.status_code == 200
    assert opted_out(contact)
    assert Message.objects.get().text == REPLY


def test_megafon_sandbox_has_no_replies():
    with pytest.raises(NotImplementedError):
        SandboxServer().post_inbound(PHONE, "STOP", url="http://127.0.0.1:9/")


@pytest.mark.django_db(transaction=True)
def test_sms_sandbox_command_posts_one_reply(providers, live_server, capsys):
    contact = Contact.objects.create(phone=PHONE)
    call_command(
        "sms_sandbox",
        "--provider=smsc",
        f"--login={SMSC_LOGIN}",
        f"--password={SMSC_PASSWORD}",
        f"--inbound-url={live_server.url}{url('smsc')}",
        "--post-inbound",
        "8 900 123-42-12",
        "Отписаться",
    )
    assert "HTTP 200" in capsys.readouterr().out
    assert opted_out(contact)


# --- the unsubscribe phrase --------------------------------------------------------------------


def test_with_unsubscribe_appends_the_phrase_once(settings):
    settings.CRM_SMS = {"UNSUBSCRIBE_TEXT": " Отказ: STOP "}
    text = with_unsubscribe("Скидка 20% до воскресенья!  \n")
    assert text == "Скидка 20% до воскресенья!\nОтказ: STOP"
    assert with_unsubscribe(text) == text
    assert with_unsubscribe("Скидка. ОТКАЗ:   stop") == "Скидка. ОТКАЗ:   stop"
    assert unsubscribe_config() == {"phrase": "Отказ: STOP", "separator": "\n"}


def test_without_a_phrase_texts_are_unchanged(settings):
    settings.CRM_SMS = {}
    assert with_unsubscribe("Скидка  ") == "Скидка  "
    assert unsubscribe_config()["phrase"] == ""


def test_the_phrase_counts_in_the_parts(settings):
    from crm_sms.text import sms_info

    settings.CRM_SMS = {"UNSUBSCRIBE_TEXT": "Otkaz: STOP"}
    text = "x" * 150
    assert sms_info(text).segments == 1
    assert sms_info(with_unsubscribe(text)).segments == 2  # 150 + 1 + 11 > 160
