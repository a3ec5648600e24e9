"""Transliteration and smart encoding (crm_sms.translit): the texts, what is stored and sent by
send_sms / send_campaign, the preview's parts before and after, and the live counter's
JavaScript doing the same as the Python (run in Node)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from crm_sms import outbox, send_campaign, send_sms
from crm_sms.models import Contact
from crm_sms.text import GSM7, GSM7_BASIC, GSM7_EXTENSION, UCS2, is_gsm7, sms_info
from crm_sms.translit import (
    LOOKALIKES,
    SCHEMA,
    TRANSLIT_SYMBOLS,
    counter_config,
    prepare_text,
    replace_lookalikes,
    smart_encode,
    transliterate,
)

COUNTER_JS = Path(__file__).resolve().parent.parent / "crm_sms/static/crm_sms/sms_counter.js"

#: An advertising text of 5 UCS-2 parts that transliterates to 2 GSM-7 parts (issue 13.4).
ADVERT = (
    "Уважаемый клиент! Только до 31 мая скидка 20% на все товары в магазине «Ромашка» на ул. "
    "Щорса, 15. Покажите это сообщение на кассе и получите подарок — фирменную кружку. "
    "Подробности на сайте romashka.ru или по телефону 8-800-555-35-35. Ждём вас ежедневно с "
    "9:00 до 21:00!"
)
ADVERT_LATIN = (
    'Uvazhaemy klient! Tolko do 31 maya skidka 20% na vse tovary v magazine "Romashka" na ul. '
    "Schorsa, 15. Pokazhite eto soobschenie na kasse i poluchite podarok - firmennuyu kruzhku. "
    "Podrobnosti na sayte romashka.ru ili po telefonu 8-800-555-35-35. Zhdem vas ezhednevno s "
    "9:00 do 21:00!"
)


# --- the texts ---------------------------------------------------------------------------------
def test_a_five_part_ucs2_text_becomes_two_gsm7_parts():
    before, after = sms_info(ADVERT), sms_info(transliterate(ADVERT))
    assert (before.encoding, before.segments) == (UCS2, 5)
    assert (after.encoding, after.segments) == (GSM7, 2)
    assert transliterate(ADVERT) == ADVERT_LATIN


def test_the_schema_is_iuliias_moscow_metro_one():
    import iuliia

    assert SCHEMA == "mosmetro"
    sample = "Юлия, съешь ещё этих мягких французских булок из Йошкар-Олы, да выпей алтайского чаю"
    assert transliterate(sample) == iuliia.MOSMETRO.translate(sample)
    assert transliterate(sample) == (
        "Yuliya, syesh esche etikh myagkikh frantsuzskikh bulok iz Yoshkar-Oly, da vypey "
        "altayskogo chayu"
    )


@pytest.mark.parametrize(
    ("text", "latin"),
    [
        ("СКИДКА 50% В ЦУМ", "SKIDKA 50% V TSUM"),  # capitals stay capitals
        ("ЖИЗНЬ", "ZHIZN"),
        ("Я", "Ya"),  # a one-letter word is a capital, not a shout
        ("Щука и ёж", "Schuka i ezh"),
        ("Заказ № 15 на 500 ₽", "Zakaz N 15 na 500 RUB"),
        ("Hello, world", "Hello, world"),  # Latin is left alone
        ("Код: 1234", "Kod: 1234"),
        ("Анна_Мария2", "Anna_Mariya2"),
    ],
)
def test_transliteration(text, latin):
    assert transliterate(text) == latin
    assert is_gsm7(transliterate(text))


def test_what_transliteration_cannot_write_stays():
    # A Ukrainian letter has no Mosmetro mapping and an emoji no GSM-7 twin: still UCS-2,
    # and then the look-alikes are not replaced either (nothing would be won).
    assert transliterate("Київ — 🙂") == "Kiїv — 🙂"


def test_every_lookalike_and_symbol_becomes_gsm7():
    for source, target in {**LOOKALIKES, **TRANSLIT_SYMBOLS}.items():
        assert not is_gsm7(source), repr(source)
        assert is_gsm7(target), repr(source)


@pytest.mark.parametrize(
    ("text", "sent"),
    [
        ("Your order «A-12» is ready – thanks…", 'Your order "A-12" is ready - thanks...'),
        ("“Quoted” ‘single’ — dash", "\"Quoted\" 'single' - dash"),
        ("10\u00a0000\u202fRUB\u200b!", "10 000 RUB!"),
        ("Plain GSM text", "Plain GSM text"),
        # Cyrillic stays UCS-2 anyway: its typography is kept
        ("Заказ «А-12» готов — спасибо…", "Заказ «А-12» готов — спасибо…"),
        # so does a Latin text with an emoji
        ("Sale «now» 🙂", "Sale «now» 🙂"),
    ],
)
def test_smart_encoding_replaces_lookalikes_only_when_that_makes_gsm7(text, sent):
    assert smart_encode(text) == sent
    assert replace_lookalikes("«a» — b…") == '"a" - b...'


def test_prepare_text_options():
    latin = "Order «A-12» – ready"
    assert prepare_text(latin) == 'Order "A-12" - ready'
    assert prepare_text(latin, smart_encoding=False) == latin
    # transliteration always includes smart encoding: a « would keep the text UCS-2
    assert prepare_text("Заказ «А-12»", translit=True, smart_encoding=False) == 'Zakaz "A-12"'
    assert prepare_text("Заказ «А-12»") == "Заказ «А-12»"


def test_smart_encoding_halves_the_parts_of_a_latin_text():
    text = "Dear customer, your order “A-12” is ready – pick it up today. " * 2
    assert sms_info(text).encoding == UCS2 and sms_info(text).segments == 2
    assert sms_info(smart_encode(text)).segments == 1


# --- what is stored and sent --------------------------------------------------------------------
@pytest.mark.django_db
def test_send_sms_stores_and_sends_the_transliterated_text(locmem_provider):
    message = send_sms("+79001234212", ADVERT, translit=True, now=True)
    assert message.text == ADVERT_LATIN
    assert message.segments == 2
    assert locmem_provider[-1].text == ADVERT_LATIN


@pytest.mark.django_db
def test_send_sms_smart_encoding_is_on_by_default(locmem_provider):
    assert send_sms("+79001234212", "Hi «Anna» – 10%").text == 'Hi "Anna" - 10%'
    kept = send_sms("+79001234213", "Hi «Anna» – 10%", smart_encoding=False)
    assert (kept.text, kept.segments) == ("Hi «Anna» – 10%", 1)
    assert send_sms("+79001234214", "Привет, «Анна»").text == "Привет, «Анна»"


@pytest.fixture
def russians(locmem_provider):
    Contact.objects.bulk_create(
        [
            Contact(phone="+79001234201", first_name="Юлия", last_name="Щербакова"),
            Contact(phone="+79001234202", first_name="Пётр", last_name="Воробьёв"),
            Contact(phone="+79001234203", first_name="Anna", last_name="Smith"),
        ]
    )
    return Contact.objects.all()


TEMPLATE = "{{ first_name }}, " + ADVERT


@pytest.mark.django_db
def test_campaign_transliterates_after_rendering(russians):
    campaign = send_campaign(russians, TEMPLATE, translit=True)
    texts = dict(campaign.messages.values_list("phone", "text"))
    assert texts["+79001234201"] == "Yuliya, " + ADVERT_LATIN
    assert texts["+79001234202"] == "Petr, " + ADVERT_LATIN
    assert texts["+79001234203"] == "Anna, " + ADVERT_LATIN
    for message in campaign.messages.all():
        assert message.segments == sms_info(message.text).segments == 2
    assert campaign.text == TEMPLATE  # the campaign keeps the template as written


@pytest.mark.django_db
def test_campaign_without_translit_keeps_cyrillic(russians):
    campaign = send_campaign(russians, TEMPLATE)
    texts = dict(campaign.messages.values_list("phone", "text"))
    assert texts["+79001234201"] == "Юлия, " + ADVERT
    assert set(campaign.messages.values_list("segments", flat=True)) == {5}


@pytest.mark.django_db
def test_preview_shows_parts_before_and_after(russians):
    preview = outbox.preview_campaign(russians, TEMPLATE, translit=True)
    assert (preview.recipients, preview.changed) == (3, 3)
    assert (preview.segments_before, preview.segments_after) == (15, 6)
    assert preview.total_segments == 6 and preview.translit is True
    first = preview.samples[0]
    assert first["original"] == "Юлия, " + ADVERT and first["text"] == "Yuliya, " + ADVERT_LATIN
    assert (first["original_info"].segments, first["info"].segments) == (5, 2)
    assert first["changed"] is True
    plain = outbox.preview_campaign(russians, "Hi {{ first_name }}")
    assert (plain.segments_before, plain.segments_after, plain.changed) == (3, 3, 0)
    assert plain.samples[0]["original"] == plain.samples[0]["text"]


@pytest.mark.django_db
def test_preview_and_campaign_agree(russians):
    template = "Привет, {{ first_name }}! Скидка «20%» — только сегодня…"
    preview = outbox.preview_campaign(russians, template, translit=True)
    campaign = send_campaign(russians, template, translit=True)
    sent = sorted(campaign.messages.values_list("text", flat=True))
    assert sorted(s["text"] for s in preview.samples) == sent
    assert preview.total_segments == sum(campaign.messages.values_list("segments", flat=True))


@pytest.mark.django_db
def test_a_static_text_is_checked_as_it_will_be_sent(russians, settings):
    """The provider's rules apply to the transformed text: Twilio takes 1600 characters."""
    from crm_sms.backends.twilio import BODY_MAX_LENGTH

    crm = dict(settings.CRM_SMS)
    crm["PROVIDERS"] = {
        **crm["PROVIDERS"],
        "twilio": {
            "BACKEND": "crm_sms.backends.twilio.TwilioBackend",
            "OPTIONS": {"account_sid": "AC1", "auth_token": "t", "sender": "+15005550006"},
        },
    }
    settings.CRM_SMS = crm
    text = "ж" * 700  # 700 characters as written, 1400 ("zh") transliterated
    assert len(transliterate(text)) == 1400 <= BODY_MAX_LENGTH
    preview = outbox.preview_campaign(russians, text, provider="twilio", translit=True)
    assert preview.recipients == 3


# --- the live counter ---------------------------------------------------------------------------
COUNTER_TEXTS = [
    ADVERT,
    "Юлия, съешь ещё этих мягких французских булок из Йошкар-Олы, да выпей алтайского чаю",
    "СКИДКА 50% В ЦУМе! Заказ № 15 на 500 ₽. ЖИЗНЬ, Я, Щука, Битцевский парк, Воробьёвы горы",
    "Your order «A-12» is ready – thanks…\u00a0Bye",
    "Заказ «А-12» готов — спасибо…",
    "Київ — 🙂 {{ first_name }}",
    "Подъезд, объявление, Ильич, Тверь, ВЕРХНИЕ ЛИХОБОРЫ, тц, Молодёжная",
    "",
]


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")
def test_the_counter_transforms_and_counts_as_python_does():
    config = counter_config()
    script = (
        f"const c = require({json.dumps(str(COUNTER_JS))});"
        "const [cfg, basic, ext, texts] = JSON.parse(require('fs').readFileSync(0, 'utf8'));"
        "const b = c.toSet(basic), e = c.toSet(ext), out = [];"
        "for (const t of texts) for (const translit of [false, true]) for (const smart of "
        "[false, true]) { const sent = c.prepareText(t, {translit, smart}, cfg, b, e);"
        " out.push([sent, c.smsInfo(sent, b, e)]); }"
        "process.stdout.write(JSON.stringify(out));"
    )
    data = json.dumps(
        [config, "".join(sorted(GSM7_BASIC)), "".join(sorted(GSM7_EXTENSION)), COUNTER_TEXTS]
    )
    done = subprocess.run(
        ["node", "-e", script], input=data, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    results = iter(json.loads(done.stdout))
    for text in COUNTER_TEXTS:
        for translit in (False, True):
            for smart in (False, True):
                sent, info = next(results)
                expected = prepare_text(text, translit=translit, smart_encoding=smart)
                assert sent == expected, (text, translit, smart)
                assert info == sms_info(expected).as_dict(), (text, translit, smart)


def test_counter_config_is_json_and_translated():
    from django.utils import translation

    config = counter_config()
    assert json.loads(json.dumps(config))["schema"] == "mosmetro"
    assert config["map"]["Щ"] == "Sch" and config["ending"]["ий"] == "y"
    assert "{segments}" in config["texts"]["before_translit"]
    with translation.override("ru"):
        texts = counter_config()["texts"]
    assert "{segments}" in texts["before_translit"]
