"""The campaign text is a small sandbox (issue 10, point 5): variables, if/elif/else and a few
filters; every error is a ValidationError a person can act on; rendering is bounded; and
Django's error pages hide SMS credentials."""

from __future__ import annotations

import time

import pytest
from django.contrib.admin import helpers
from django.core.exceptions import ValidationError
from django.http import HttpRequest
from django.test import Client, override_settings
from django.urls import path, reverse
from django.views.debug import ExceptionReporter, get_default_exception_reporter_filter

from crm_sms.text import (
    ALLOWED_FILTERS,
    MAX_DEPTH,
    MAX_SOURCE_LENGTH,
    MAX_TAGS,
    MAX_TEXT_LENGTH,
    SMSTemplate,
)

VALUES = {"first_name": "Иван", "last_name": "Петров", "middle_name": "", "phone": "+79001234212"}


def error_of(source: str, **kwargs) -> ValidationError:
    with pytest.raises(ValidationError) as excinfo:
        SMSTemplate(source, **kwargs)
    return excinfo.value


# --- only what an SMS needs ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "tag"),
    [
        ("{% include 'x' %}", "{% include %}"),
        ("{% include 'admin/base.html' %}", "{% include %}"),
        ("{% debug %}", "{% debug %}"),
        ("{% for a in phone %}{{ a }}{% endfor %}", "{% for %}"),
        ("{% load static %}", "{% load %}"),
        ("{% now 'Y' %}", "{% now %}"),
        ("{% extends 'admin/base.html' %}", "{% extends %}"),
        ("{% url 'admin:index' %}", "{% url %}"),
        ("{% csrf_token %}", "{% csrf_token %}"),
        ("{% with a=phone %}{{ a }}{% endwith %}", "{% with %}"),
        ("{% lorem 9999 w %}", "{% lorem %}"),
        ("{% widthratio 1 1 999999999 %}", "{% widthratio %}"),
        ("{% filter upper %}x{% endfilter %}", "{% filter %}"),
    ],
)
def test_only_if_tags_are_allowed(source, tag):
    error = error_of(source)
    assert error.code == "template_syntax"
    message = " ".join(error.messages)
    assert tag in message  # which tag, in the form the person typed it
    assert "{% if %}" in message  # and what can be used instead


@pytest.mark.parametrize("tag", ["else", "elif x", "endif"])
def test_a_branch_without_if_says_so(tag):
    message = " ".join(error_of("Hi {% " + tag + " %}").messages)
    assert "{% if %}" in message and tag.split()[0] in message


def test_an_unclosed_if_says_what_to_add():
    message = " ".join(error_of("{% if first_name %}Hi {{ first_name }}").messages)
    assert "“{% if %}” is not closed: add {% endif %}." in message


def test_six_nested_loops_are_refused_at_once():
    loops = "".join("{% for a" + str(i) + " in '0123456789' %}" for i in range(6))
    source = loops + "{{ first_name }}" + "{% endfor %}" * 6
    started = time.process_time()  # CPU time: the machine's load does not count
    error = error_of(source)
    assert time.process_time() - started < 0.5  # rendering it would take minutes
    assert "{% for %}" in " ".join(error.messages)


@pytest.mark.parametrize(
    "source",
    [
        "{{ first_name|ljust:'99999999' }}",
        "{{ first_name|center:'99999999' }}",
        "{{ phone|stringformat:'099999999d' }}",
        "{{ phone|floatformat:'-99999' }}",
        "{{ first_name|pprint }}",
        "{{ first_name|safe }}",
        "{{ first_name|linebreaks }}",
    ],
)
def test_filters_outside_the_list_are_refused(source):
    name = source.split("|")[1].split(":")[0].split(" ")[0]
    error = error_of(source)
    assert error.code == "template_syntax"
    message = " ".join(error.messages)
    assert f"|{name}" in message and "|default" in message and "|upper" in message


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{ middle_name|default:'клиент' }}", "клиент"),
        ("{{ middle_name|default:first_name }}", "Иван"),
        ("{{ first_name|upper }} {{ first_name|lower }}", "ИВАН иван"),
        ("{{ 'иван петров'|title }} {{ 'иван'|capfirst }}", "Иван Петров Иван"),
        ("{{ phone|cut:'+' }}", "79001234212"),
        ("{{ last_name|truncatechars:4 }}", "Пет…"),
        ("{{ 'a b c d'|truncatewords:2 }}", "a b …"),
        ("{{ phone|urlencode }}", "%2B79001234212"),
        (
            "{% if middle_name %}{{ middle_name }}{% elif last_name %}{{ last_name }}{% endif %}",
            "Петров",
        ),
        (
            "{% if phone|cut:'+' == '79001234212' and not middle_name %}ok{% else %}no{% endif %}",
            "ok",
        ),
        ("{# a note to colleagues #}Hi", "Hi"),
    ],
)
def test_allowed_tags_and_filters_render(source, expected):
    assert SMSTemplate(source).render(VALUES) == expected


def test_dates_and_yes_no_for_extra_variables():
    import datetime

    template = SMSTemplate(
        "{{ day|date:'d.m.Y' }} {{ vip|yesno:'VIP,обычный' }}", variables=("day", "vip")
    )
    assert template.render({"day": datetime.date(2026, 3, 8), "vip": False}) == (
        "08.03.2026 обычный"
    )


def test_the_allowed_filters_are_the_documented_ones():
    assert set(ALLOWED_FILTERS) == {
        "capfirst",
        "cut",
        "date",
        "default",
        "default_if_none",
        "lower",
        "time",
        "title",
        "truncatechars",
        "truncatewords",
        "upper",
        "urlencode",
        "yesno",
    }


@pytest.mark.parametrize(
    "source",
    [
        "{{ first_name.upper }}",
        "{{ phone.__class__ }}",
        "{% if phone.isdigit %}x{% endif %}",
        "{{ first_name|default:last_name.upper }}",
    ],
)
def test_attribute_lookups_are_refused(source):
    error = error_of(source)
    assert error.code == "template_syntax"


def test_an_unknown_name_as_a_filter_argument_is_caught_before_sending():
    # Before: VariableDoesNotExist at render, a 500 in the admin preview.
    error = error_of("{{ first_name|default:nick }}")
    assert error.code == "template_variable"
    assert "{{ nick }}" in " ".join(error.messages)


# --- bounded ------------------------------------------------------------------------------


def test_deep_nesting_is_refused_not_a_recursion_error():
    deep = "{% if first_name %}" * 300 + "x" + "{% endif %}" * 300
    assert error_of(deep).code == "template_syntax"
    limit = "{% if first_name %}" * MAX_DEPTH + "x" + "{% endif %}" * MAX_DEPTH
    assert SMSTemplate(limit).render(VALUES) == "x"
    over = "{% if first_name %}" * (MAX_DEPTH + 1) + "x" + "{% endif %}" * (MAX_DEPTH + 1)
    assert str(MAX_DEPTH) in " ".join(error_of(over).messages)


def test_a_long_condition_is_refused_not_a_recursion_error():
    source = "{% if " + "not " * 450 + "first_name %}x{% endif %}"
    assert len(source) < MAX_SOURCE_LENGTH
    assert error_of(source).code == "template_syntax"


def test_too_long_or_too_many_tags_is_refused():
    long = "x" * (MAX_SOURCE_LENGTH + 1)
    assert str(MAX_SOURCE_LENGTH) in " ".join(error_of(long).messages)
    many = "{{ phone }}" * (MAX_TAGS + 1)
    assert len(many) <= MAX_SOURCE_LENGTH
    assert str(MAX_TAGS) in " ".join(error_of(many).messages)
    SMSTemplate("{{ phone }}" * MAX_TAGS)


def test_rendered_text_is_capped():
    template = SMSTemplate("{{ note }}{{ note }}", variables=("note",))
    assert template.render({"note": "a" * (MAX_TEXT_LENGTH // 2)}) == "a" * MAX_TEXT_LENGTH
    with pytest.raises(ValidationError) as excinfo:
        template.render({"note": "a" * (MAX_TEXT_LENGTH // 2 + 1)})
    assert excinfo.value.code == "text_too_long"
    assert str(MAX_TEXT_LENGTH) in " ".join(excinfo.value.messages)
    with pytest.raises(ValidationError):  # the fast path for plain names is capped too
        SMSTemplate("{{ first_name }}").render({**VALUES, "first_name": "a" * 5000})


def test_worst_allowed_template_renders_quickly():
    piece = "{% if first_name %}{{ last_name|default:first_name|upper|cut:'x' }}{% endif %}"
    source = piece * (MAX_TAGS // 4)
    template = SMSTemplate(source)
    values = {**VALUES, "last_name": "Я" * 150, "first_name": "Ж" * 150}
    started = time.process_time()  # CPU time: the machine's load does not count
    for _ in range(100):
        with pytest.raises(ValidationError):  # longer than MAX_TEXT_LENGTH
            template.render(values)
        template.render({**VALUES, "last_name": "Петров"})
    assert time.process_time() - started < 2  # ~1 ms per recipient on a slow machine


def test_errors_while_rendering_become_validation_errors():
    class Broken:
        def __str__(self):
            raise RuntimeError("no")

    template = SMSTemplate("{{ order|upper }}", variables=("order",))
    with pytest.raises(ValidationError) as excinfo:
        template.render({"order": Broken()})
    assert excinfo.value.code == "template_render"


# --- through the admin: an error on the form, not a 500 ----------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    "text",
    [
        "{% include 'x' %}",
        "{% debug %}",
        "{{ first_name|default:nick }}",
        "{% if first_name %}" * 300 + "{% endif %}" * 300,
    ],
)
def test_send_page_shows_the_template_error(admin_en, contact_factory, sms_providers, text):
    contacts = contact_factory(2)
    page = admin_en.post(
        reverse("admin:crm_sms_contact_changelist"),
        {
            "action": "send_sms_action",
            "index": "0",
            helpers.ACTION_CHECKBOX_NAME: [c.pk for c in contacts],
            "_sms_step": "1",
            "sender": "",
            "provider": "default",
            "name": "",
            "text": text,
            "_preview": "1",
        },
    )
    assert page.status_code == 200
    html = page.content.decode()
    assert 'id="id_text_error"' in html  # next to the text field, in words
    assert "/work/" not in html and "sys.path" not in html  # nothing of {% debug %}


# --- the error reporter hides SMS credentials ---------------------------------------------

# Built, so that the debug page's source lines around boom() do not show them whole.
SMS_PASSWORD = "Pr0vider" + "-Secret"
TOKEN = "cb-token-" + "0123456789abcdef"


def boom(request: HttpRequest):
    raise RuntimeError("boom")


urlpatterns = [path("boom/", boom)]


@pytest.fixture
def secret_settings(settings):
    settings.SMS_URL = f"megafon://shop:{SMS_PASSWORD}@a2p-api.megalabs.ru/"
    settings.CRM_SMS = {
        "PROVIDERS": {
            "default": {
                "BACKEND": "crm_sms.backends.locmem.LocmemBackend",
                "OPTIONS": {"url": f"megafon://shop:{SMS_PASSWORD}@host/", "password": "x"},
            }
        },
        "CALLBACK_TOKEN": TOKEN,
    }
    return settings


META = {
    "SMS_URL": f"megafon://shop:{SMS_PASSWORD}@a2p-api.megalabs.ru/?sender=Shop",
    "SMS_URL_BACKUP": f"smsru://{SMS_PASSWORD}@sms.ru/",
    "SMS_CALLBACK_TOKEN": TOKEN,
    "SMSRU_API_TOKEN": TOKEN,
    "DATABASE_URL": f"postgres://crm:{SMS_PASSWORD}@db.internal:5432/crm",
    "CELERY_BROKER_URL": f"redis://:{SMS_PASSWORD}@redis.internal:6379/0",
    "CALLBACK_PATH": f"/sms/callback/default/{TOKEN}/",
    "OTHER_SMSRU": f"smsru://{SMS_PASSWORD}@sms.ru/?sender=Shop",
}


def test_the_demo_settings_use_the_app_filter():
    from crm_sms.debug import SafeExceptionReporterFilter

    assert isinstance(get_default_exception_reporter_filter(), SafeExceptionReporterFilter)


@override_settings(ROOT_URLCONF=__name__, DEBUG=True)
def test_debug_page_hides_sms_url_tokens_and_url_passwords(secret_settings):
    client = Client(raise_request_exception=False)
    response = client.get("/boom/", **META)
    assert response.status_code == 500
    html = response.content.decode()
    assert "SMS_URL_BACKUP" in html and "db.internal" in html  # the page is still useful
    assert SMS_PASSWORD not in html
    assert TOKEN not in html


def test_error_email_text_hides_them_too(rf, secret_settings):
    request = rf.get("/boom/", **META)
    try:
        raise RuntimeError("boom")
    except RuntimeError as exc:
        text = ExceptionReporter(request, type(exc), exc, exc.__traceback__).get_traceback_text()
    assert "SMS_URL" in text
    assert "postgres://crm:********************@db.internal" in text  # the user stays
    assert "smsru://********************@sms.ru" in text
    assert SMS_PASSWORD not in text
    assert TOKEN not in text
