"""Who may do what in the admin (issue 10, points 2 and 11), by real POSTs with a CSRF token.

Every path that can make an SMS go out needs ``crm_sms.send_sms`` on top of the model's own
permission: the "Send SMS…" action (contacts, groups), "Resume" and "Retry failed" (actions
and the change page's ``control/`` URLs), "Resend" (messages), sending a copied draft, and
scheduling one. Each is tried by a staff user who has ``change_campaign`` but not
``send_sms`` (refused: 403 or no such action, and nothing changes in the database), then by one
who has it (it works). Exporting contacts needs ``crm_sms.export_contact``: "view" is not
enough to take every phone and email home.

The client enforces CSRF like a browser: each POST carries the token read from the page
before it (``Browser.post``).
"""

from __future__ import annotations

import csv
import io
import re

import pytest
from django.contrib.admin import helpers
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse

from crm_sms import outbox
from crm_sms.admin.common import DRAFT_SESSION_KEY
from crm_sms.campaign_counts import recount
from crm_sms.models import Campaign, CampaignStatus, Contact, ContactGroup, Message

pytestmark = pytest.mark.django_db

M_FAILED, M_DELIVERED = "failed", "delivered"
#: An operator of campaigns: may look at and change everything, but not send.
OPERATOR = [
    "view_contact",
    "change_contact",
    "view_contactgroup",
    "view_campaign",
    "change_campaign",
    "view_message",
]
TOKEN = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')
HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)"')


def staff(username: str, codenames: list[str]) -> User:
    user = User.objects.create_user(username, password="pw", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(content_type__app_label="crm_sms", codename__in=codenames)
    )
    return user


class Browser:
    """A staff user's browser: CSRF checks on, each POST with the token of the page before."""

    def __init__(self, user: User):
        self.client = Client(enforce_csrf_checks=True, headers={"accept-language": "en"})
        self.client.force_login(user)

    def get(self, url: str, **params):
        response = self.client.get(url, params)
        assert response.status_code == 200, (url, response.status_code)
        return response

    def token(self, page: str) -> str:
        return TOKEN.search(self.get(page).content.decode()).group(1)

    def post(self, page: str, url: str | None = None, data: dict | None = None, **kwargs):
        data = {**(data or {}), "csrfmiddlewaretoken": self.token(page)}
        return self.client.post(url or page, data, **kwargs)


@pytest.fixture(params=[False, True], ids=["without-send_sms", "with-send_sms"])
def may_send(request) -> bool:
    return request.param


@pytest.fixture
def browser(db, may_send) -> Browser:
    return Browser(staff("operator", OPERATOR + (["send_sms"] if may_send else [])))


@pytest.fixture
def paused(contact_factory, sms_providers) -> Campaign:
    contact_factory(3)
    campaign = outbox.send_campaign(Contact.objects.all(), "Hello", name="Spring")
    outbox.pause_campaign(campaign)
    return campaign


@pytest.fixture
def failed(contact_factory, sms_providers) -> Campaign:
    """A completed campaign: one message failed, two delivered."""
    contact_factory(3)
    campaign = outbox.send_campaign(Contact.objects.all(), "Hello", name="Spring")
    first, *rest = campaign.messages.order_by("pk")
    Message.objects.filter(pk=first.pk).update(status=M_FAILED)
    Message.objects.filter(pk__in=[m.pk for m in rest]).update(status=M_DELIVERED)
    Campaign.objects.filter(pk=campaign.pk).update(status=CampaignStatus.COMPLETED)
    recount([campaign.pk])  # statuses set by hand, not through transitions.move_messages
    return campaign


def changelist(model: str) -> str:
    return reverse(f"admin:crm_sms_{model}_changelist")


def change_page(campaign: Campaign) -> str:
    return reverse("admin:crm_sms_campaign_change", args=[campaign.pk])


def control(campaign: Campaign, operation: str) -> str:
    return reverse("admin:crm_sms_campaign_control", args=[campaign.pk, operation])


def run_action(browser: Browser, model: str, action: str, pks: list[int], **extra):
    data = {"action": action, "index": "0", helpers.ACTION_CHECKBOX_NAME: pks, **extra}
    return browser.post(changelist(model), data=data)


def offered(browser: Browser, model: str, action: str) -> bool:
    return f'value="{action}"' in browser.get(changelist(model)).content.decode()


def confirm_if_asked(browser: Browser, model: str, response) -> None:
    """An action that answers with a confirmation page (what will happen): submit it as shown,
    once (its hidden fields, with the token it carries)."""
    html = response.content.decode() if response.status_code == 200 else ""
    if 'name="post"' not in html:
        return
    fields: dict[str, list[str]] = {}
    for name, value in HIDDEN.findall(html):
        fields.setdefault(name, []).append(value)
    browser.client.post(changelist(model), fields)


def failed_count(campaign: Campaign) -> int:
    return campaign.messages.filter(status=M_FAILED).count()


def test_csrf_is_enforced(paused, browser):
    response = browser.client.post(control(paused, "resume"))
    assert response.status_code == 403  # no token: refused before any permission check
    paused.refresh_from_db()
    assert paused.status == CampaignStatus.PAUSED


# --- resume and retry failed: the actions and the control URLs --------------------------------


def test_resume_action(paused, browser, may_send):
    assert offered(browser, "campaign", "resume_action") is may_send
    assert offered(browser, "campaign", "pause_action")  # pausing sends nothing
    run_action(browser, "campaign", "resume_action", [paused.pk])
    paused.refresh_from_db()
    assert paused.status == (CampaignStatus.RUNNING if may_send else CampaignStatus.PAUSED)


def test_resume_button_and_control_url(paused, browser, may_send):
    html = browser.get(change_page(paused)).content.decode()
    assert ('name="resume"' in html) is may_send
    assert 'name="cancel"' in html
    response = browser.post(change_page(paused), control(paused, "resume"))
    assert response.status_code == (302 if may_send else 403)
    paused.refresh_from_db()
    assert paused.status == (CampaignStatus.RUNNING if may_send else CampaignStatus.PAUSED)


def test_retry_failed_action(failed, browser, may_send):
    assert offered(browser, "campaign", "retry_failed_action") is may_send
    response = run_action(browser, "campaign", "retry_failed_action", [failed.pk])
    confirm_if_asked(browser, "campaign", response)
    failed.refresh_from_db()
    if may_send:
        assert failed_count(failed) == 0 and failed.status == CampaignStatus.RUNNING
    else:
        assert failed_count(failed) == 1 and failed.status == CampaignStatus.COMPLETED


def test_retry_failed_button_and_control_url(failed, browser, may_send):
    html = browser.get(change_page(failed)).content.decode()
    assert ('name="retry"' in html) is may_send
    response = browser.post(change_page(failed), control(failed, "retry"))
    assert response.status_code in ((200, 302) if may_send else (403,))
    failed.refresh_from_db()
    if not may_send:
        assert failed_count(failed) == 1 and failed.status == CampaignStatus.COMPLETED


# --- resend (the messages) --------------------------------------------------------------------


def test_resend(failed, browser, may_send):
    message = failed.messages.get(status=M_FAILED)
    assert offered(browser, "message", "resend_action") is may_send
    response = run_action(browser, "message", "resend_action", [message.pk])
    confirm_if_asked(browser, "message", response)
    # Queued again (its own row, or a new one with the same phone), or left failed.
    queued = Message.objects.filter(phone=message.phone, status="queued")
    assert queued.exists() is may_send
    if not may_send:
        message.refresh_from_db()
        assert message.status == M_FAILED
    failed.refresh_from_db()
    assert failed.status == (CampaignStatus.RUNNING if may_send else CampaignStatus.COMPLETED)


# --- "Send SMS…" on contacts and groups -------------------------------------------------------


@pytest.mark.parametrize("model", ["contact", "contactgroup"])
def test_send_sms_action(contact_factory, sms_providers, browser, may_send, model):
    contacts = contact_factory(2)
    group = ContactGroup.objects.create(name="VIP")
    group.contacts.set(contacts)
    pks = [c.pk for c in contacts] if model == "contact" else [group.pk]
    assert offered(browser, model, "send_sms_action") is may_send
    fields = {"_sms_step": "1", "text": "Hello", "sender": "", "provider": "default", "name": ""}
    preview = run_action(browser, model, "send_sms_action", pks, _preview="1", **fields)
    key = preview.context["preview_key"] if may_send else "forged"
    run_action(browser, model, "send_sms_action", pks, _send="1", previewed=key, **fields)
    assert Campaign.objects.exists() is may_send
    assert Message.objects.count() == (2 if may_send else 0)


# --- a copied draft: sending it, scheduling it ------------------------------------------------


def test_copy_is_allowed_but_sending_the_draft_needs_send_sms(failed, browser, may_send):
    browser.post(change_page(failed), control(failed, "copy"))
    draft = Campaign.objects.get(status=CampaignStatus.DRAFT)  # a draft sends nothing
    assert not draft.messages.exists()
    html = browser.get(change_page(draft)).content.decode()
    assert ('name="use"' in html) is may_send
    response = browser.post(change_page(draft), control(draft, "use"))
    assert response.status_code == (302 if may_send else 403)
    assert (DRAFT_SESSION_KEY in browser.client.session) is may_send


def test_scheduling_a_draft_needs_send_sms(sms_providers, browser, may_send):
    draft = Campaign.objects.create(name="Draft", text="Hi", provider="default")
    data = {
        "name": "Autumn",
        "text": "Hi there",
        "sender": "",
        "provider": "default",
        "scheduled_at_0": "2030-01-01",
        "scheduled_at_1": "10:00",
    }
    response = browser.post(change_page(draft), data=data)
    assert response.status_code == 302
    draft.refresh_from_db()
    assert draft.text == "Hi there"  # drafting is fine
    assert (draft.scheduled_at is not None) is may_send
    assert draft.status == CampaignStatus.DRAFT


# --- exporting contacts (point 11) ------------------------------------------------------------


@pytest.fixture(params=[False, True], ids=["view-only", "with-export_contact"])
def may_export(request) -> bool:
    return request.param


def export_data() -> dict[str, str]:
    from crm_sms.resources import ContactResource

    data = {"format": "0", "resource": "0"}
    for field in ContactResource().get_export_order():
        data[f"contactresource_{field}"] = "on"
    return data


def test_export_needs_export_contact(contact_factory, may_export):
    contact_factory(3)
    codenames = ["view_contact"] + (["export_contact"] if may_export else [])
    browser = Browser(staff("viewer", codenames))
    export_url = reverse("admin:crm_sms_contact_export")
    assert (export_url in browser.get(changelist("contact")).content.decode()) is may_export
    assert browser.client.get(export_url).status_code == (200 if may_export else 403)
    response = browser.post(changelist("contact"), export_url, data=export_data())
    assert response.status_code == (200 if may_export else 403)
    if may_export:
        rows = list(csv.reader(io.StringIO(response.content.decode("utf-8-sig"))))
        assert len(rows) == 4 and "+79000000000" in sum(rows, [])
    else:
        assert b"+7900" not in response.content
