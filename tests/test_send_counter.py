"""The live counter of "Send SMS…" (issue 14.5): for a template the page's action answers
with the longest text it makes for the selected recipients (``_sms_counter``), and the
counter's numbers take their plural forms (Russian: 1 символ, 2 символа, 5 символов).

Run on SQLite and on PostgreSQL (``DATABASE_URL=postgres://…``); the browser side is in
tests/test_send_counter_browser.py."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from django.contrib.admin import helpers
from django.urls import reverse
from django.utils import translation
from django.utils.translation import ngettext

from crm_sms.admin.send_preview import plural_forms, total_line
from crm_sms.models import Contact
from crm_sms.text import sms_info
from crm_sms.translit import prepare_text

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:crm_sms_contact_changelist"
COUNTER_JS = Path(__file__).resolve().parent.parent / "crm_sms/static/crm_sms/sms_counter.js"
NAMES = ["Ян", "Анна", "Александра", "Zoe"]


@pytest.fixture
def named(sms_providers):
    for i, name in enumerate(NAMES):
        Contact.objects.create(first_name=name, phone=f"+7900000001{i}")
    # Left out: the longest name of all, and an invalid phone's.
    Contact.objects.create(first_name="Константинопольская", phone="+79000000020", opted_out=True)
    Contact.objects.create(first_name="Длинноеимяневерныйномер", phone="12-345")
    return Contact.objects.all()


def ask(client, contacts, text: str, select_across: bool = False, **fields):
    data = {
        "action": "send_sms_action",
        "index": "0",
        "select_across": "1" if select_across else "0",
        helpers.ACTION_CHECKBOX_NAME: [c.pk for c in contacts],
        "_sms_step": "1",
        "_sms_counter": "1",
        "provider": "default",
        "text": text,
        **fields,
    }
    return client.post(reverse(CHANGELIST), data)


def expected(text: str, translit: bool = False) -> dict:
    """The worst info among the recipients' texts (most parts, then units, then characters)."""
    infos = [
        sms_info(prepare_text(text.replace("{{ first_name }}", name), translit=translit))
        for name in NAMES
    ]
    return max(infos, key=lambda i: (i.segments, i.units, i.characters)).as_dict()


def test_the_counter_gets_the_longest_text_of_the_recipients(admin_en, named):
    text = "Привет, {{ first_name }}! Скидка 10% на всё"
    answer = ask(admin_en, named, text).json()
    assert answer["longest"] == expected(text)
    assert answer["longest"]["characters"] == len(text) - len("{{ first_name }}") + 10
    assert answer["before"] == answer["longest"]
    # "x…x Александра": 69 UCS-2 characters fit one part, 71 take two.
    for xs, parts in ((58, 1), (60, 2)):
        text = "x" * xs + " {{ first_name }}"
        assert ask(admin_en, named, text).json()["longest"] == expected(text)
        assert expected(text)["segments"] == parts


def test_the_counter_follows_transliteration_and_advertising(admin_en, named):
    text = "Привет, {{ first_name }}!"
    answer = ask(admin_en, named, text, translit="on").json()
    assert answer["longest"] == expected(text, translit=True)
    assert answer["longest"]["encoding"] == "GSM-7" and answer["before"]["encoding"] == "UCS-2"
    advert = ask(admin_en, named, text, kind="advertising").json()
    assert advert["longest"] is None  # nobody consented: no text goes out


def test_the_counter_says_what_is_wrong_with_the_template(admin_en, named):
    answer = ask(admin_en, named, "Hi {{ nickname }}").json()
    assert "nickname" in answer["error"]
    assert ask(admin_en, named, "").json()["error"]  # required


def test_select_all_with_the_list_filter(admin_en, named):
    url = reverse(CHANGELIST) + "?opted_out__exact=1"
    data = {
        "action": "send_sms_action",
        "index": "0",
        "select_across": "1",
        helpers.ACTION_CHECKBOX_NAME: [named[0].pk],
        "_sms_step": "1",
        "_sms_counter": "1",
        "provider": "default",
        "text": "{{ first_name }}",
    }
    answer = admin_en.post(url, data).json()
    assert answer["longest"] is None  # the filter leaves the opted-out contact only
    answer = admin_en.post(reverse(CHANGELIST), data).json()
    assert answer["longest"]["characters"] == len("Александра")


def test_only_users_who_may_send_get_an_answer(client, viewer_user, sender_user, named):
    client.force_login(viewer_user)
    response = ask(client, named, "{{ first_name }}")
    assert response.get("Content-Type") != "application/json"
    client.force_login(sender_user)
    assert ask(client, named, "{{ first_name }}").json()["longest"]["characters"] == 10


def test_plural_forms_for_the_counter():
    english = plural_forms(lambda n: ngettext("%(count)s character", "%(count)s characters", n))
    assert english["forms"] == ["%(count)s characters", "%(count)s character"]
    assert [english["index"][n] for n in (0, 1, 2, 5, 21)] == [0, 1, 0, 0, 0]
    with translation.override("ru"):  # a phrase the Russian catalog has: its 3 forms
        russian = plural_forms(
            lambda n: ngettext("%(counter)s recipient", "%(counter)s recipients", n)
        )
    forms = [f.replace("%(counter)s", "%(count)s") for f in russian["forms"]]
    assert forms == ["%(count)s получателей", "%(count)s получатель", "%(count)s получателя"]
    assert [russian["index"][n] for n in (0, 1, 2, 5, 11, 21, 22, 111, 199)] == [
        0, 1, 2, 0, 0, 1, 2, 0, 0,
    ]  # fmt: skip
    if shutil.which("node") is None:
        pytest.skip("Node.js is not installed")
    config = {"forms": forms, "index": russian["index"]}
    script = (
        f"const c = require({json.dumps(str(COUNTER_JS))});"
        "const f = JSON.parse(require('fs').readFileSync(0, 'utf8'));"
        "process.stdout.write(JSON.stringify([1, 3, 5, 121, 1002, 2011].map(n => c.plural(f, n))));"
    )
    done = subprocess.run(
        ["node", "-e", script], input=json.dumps(config), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [
        "1 получатель",
        "3 получателя",
        "5 получателей",
        "121 получатель",
        "1002 получателя",
        "2011 получателей",
    ]


def test_the_total_line_has_a_plural_for_each_number(named):
    from types import SimpleNamespace

    line = total_line(SimpleNamespace(recipients=1, total_segments=2))
    assert line == "In all: 2 SMS parts to 1 recipient."
    assert total_line(SimpleNamespace(recipients=3, total_segments=1)) == (
        "In all: 1 SMS part to 3 recipients."
    )


def test_one_page_reuses_its_groups_while_the_template_is_typed(admin_en, named):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    page = admin_en.post(
        reverse(CHANGELIST),
        {"action": "send_sms_action", "index": "0", helpers.ACTION_CHECKBOX_NAME: [named[0].pk]},
    )
    token = page.context["counter_token"]
    assert f'name="_sms_counter_page" value="{token}"' in page.content.decode()

    def grouped(text: str, page_token: str) -> tuple[dict, int]:
        with CaptureQueriesContext(connection) as queries:
            answer = ask(admin_en, named, text, _sms_counter_page=page_token).json()
        return answer, sum("GROUP BY" in q["sql"] for q in queries.captured_queries)

    first, queries = grouped("Hi {{ first_name }}", token)
    assert first["longest"]["characters"] == len("Hi Александра") and queries == 1
    again, queries = grouped("Hello there, {{ first_name }}", token)
    assert again["longest"]["characters"] == len("Hello there, Александра") and queries == 0
    Contact.objects.filter(first_name="Александра").update(first_name="Ксения")
    fresh, queries = grouped("Hi {{ first_name }}", "0123456789abcdef")  # another page
    assert fresh["longest"]["characters"] == len("Hi Ксения") and queries == 1
