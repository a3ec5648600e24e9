"""Issue 14.4 in a real browser (Debian's chromium through Playwright): the contact list fits a
1366 px screen with its filter sidebar, in English and Russian, light and dark; the opted-out
column marks only opted-out contacts; the secondary buttons ("No, take me back", "Cancel",
"Upload another file") are as tall as the submit buttons next to them and on their line.
Screenshots go to test-output/look/."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
SHOTS = Path(__file__).resolve().parent.parent / "test-output" / "look"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's chromium"),
]

# Long but real: the widest names, e-mails and groups a Russian CRM has.
LONG_ROWS = [
    (
        "Константинопольская",
        "Александра",
        "Владимировна",
        "konstantinopolskaya.a@example-company.ru",
    ),
    ("Преображенский", "Вячеслав", "Александрович", "v.preobrazhensky@very-long-domain-name.ru"),
    ("Иванова", "Анна", "Сергеевна", "anna@example.com"),
]


def make_data():
    from crm_sms.models import (
        Campaign,
        CampaignStatus,
        Contact,
        ContactGroup,
        Message,
        MessageStatus,
    )

    groups = [
        ContactGroup.objects.create(name=name)
        for name in ("Постоянные клиенты", "Рассылка по акциям весной", "VIP-партнёры")
    ]
    contacts = []
    for i in range(12):
        last, first, middle, email = LONG_ROWS[i % len(LONG_ROWS)]
        contact = Contact.objects.create(
            last_name=last,
            first_name=first,
            middle_name=middle,
            email=email,
            phone=f"+7900555{i:04d}",
            opted_out=i % 4 == 0,
        )
        contact.groups.set(groups)
        contacts.append(contact)
    campaign = Campaign.objects.create(
        name="Весенняя распродажа", text="Привет!", status=CampaignStatus.COMPLETED
    )
    failed = Message.objects.create(
        contact=contacts[1],
        campaign=campaign,
        phone=contacts[1].phone,
        text="Привет!",
        provider="default",
        msg_id="look-1",
        status=MessageStatus.FAILED,
    )
    return contacts, campaign, failed


def fits(page) -> dict[str, int]:
    """The page's and the result table's box's scroll and visible widths (Django's ``.results``
    box scrolls sideways by itself: a page that fits may still hide columns there)."""
    return page.evaluate(
        """() => {
            const box = document.querySelector('#changelist .results');
            return {page: document.documentElement.scrollWidth, window: window.innerWidth,
                    results: box.scrollWidth, resultsBox: box.clientWidth};
        }"""
    )


def button_boxes(page, submit: str, secondary: str) -> tuple[dict, dict]:
    first = page.locator(submit).first.bounding_box()
    second = page.locator(secondary).first.bounding_box()
    assert first and second
    return first, second


def assert_same_line(page, name: str, submit: str, secondary: str) -> None:
    """The secondary button is as tall as the submit button (within 1 px) and on its line."""
    first, second = button_boxes(page, submit, secondary)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
    assert abs(first["height"] - second["height"]) <= 1, (name, first, second)
    assert abs(first["y"] - second["y"]) <= 1, (name, first, second)


@pytest.mark.parametrize("language", ["en", "ru"])
def test_contact_list_fits_1366_and_marks_only_opted_out_contacts(browser_page, language):
    base, open_page = browser_page
    contacts, _, _ = make_data()
    for scheme in ("light", "dark"):
        browser, page = open_page(language, scheme)
        try:
            page.goto(f"{base}/admin/crm_sms/contact/")
            assert page.locator("#changelist-filter").is_visible()
            page.screenshot(path=str(SHOTS / f"contacts-{language}-{scheme}-1366.png"))
            widths = fits(page)
            assert widths["page"] <= widths["window"], (language, scheme, widths)
            assert widths["results"] <= widths["resultsBox"], (language, scheme, widths)
            # Nothing spills out of its cell (a column squeezed below its longest word).
            spilled = page.eval_on_selector_all(
                "#result_list td, #result_list th",
                "cells => cells.filter(c => c.scrollWidth > c.clientWidth + 1)"
                ".map(c => c.className + ': ' + c.textContent.trim())",
            )
            assert spilled == [], spilled
            marks = page.locator("#result_list td.field-opted_out_mark .crm-sms-opted-out")
            assert marks.count() == sum(c.opted_out for c in contacts)
        finally:
            browser.close()


@pytest.mark.parametrize("language", ["en", "ru"])
def test_secondary_buttons_match_the_submit_buttons(browser_page, language):
    base, open_page = browser_page
    contacts, campaign, failed = make_data()
    browser, page = open_page(language)
    try:
        # Opt out… (the consent actions' page).
        page.goto(f"{base}/admin/crm_sms/contact/")
        page.check(f"input.action-select[value='{contacts[1].pk}']")
        page.select_option("select[name=action]", "opt_out_action")
        page.click("button[name=index]")
        assert_same_line(
            page,
            f"consent-{language}",
            "#consent-form .submit-row input[type=submit]",
            "#consent-form .submit-row a.cancel-link",
        )
        # Erase personal data…
        page.goto(f"{base}/admin/crm_sms/contact/")
        page.check(f"input.action-select[value='{contacts[1].pk}']")
        page.select_option("select[name=action]", "erase_personal_data")
        page.click("button[name=index]")
        assert_same_line(
            page,
            f"erase-{language}",
            "#content .submit-row input[type=submit]",
            "#content .submit-row a.cancel-link",
        )
        # Retry failed… of a campaign.
        page.goto(f"{base}/admin/crm_sms/campaign/")
        page.check(f"input.action-select[value='{campaign.pk}']")
        page.select_option("select[name=action]", "retry_failed_action")
        page.click("button[name=index]")
        assert_same_line(
            page,
            f"retry-{language}",
            "#content .submit-row input[type=submit]",
            "#content .submit-row a.cancel-link",
        )
        # Resend… a message.
        page.goto(f"{base}/admin/crm_sms/message/")
        page.check(f"input.action-select[value='{failed.pk}']")
        page.select_option("select[name=action]", "resend_action")
        page.click("button[name=index]")
        assert_same_line(
            page,
            f"resend-{language}",
            "#content .submit-row input[type=submit]",
            "#content .submit-row a.cancel-link",
        )
        # The import's upload page: "Cancel".
        page.goto(f"{base}/admin/crm_sms/contact/import/")
        assert_same_line(
            page,
            f"import-{language}",
            "#content .submit-row input[type=submit]",
            "#content .submit-row a.cancel-link",
        )
        # The import's check page: "Upload another file" next to "Import N rows".
        page.set_input_files(
            "#content input[type=file]",
            files=[
                {
                    "name": "contacts.csv",
                    "mimeType": "text/csv",
                    "buffer": "Фамилия,Имя,Телефон\nОрлова,Ольга,+79001112233\n".encode(),
                }
            ],
        )
        page.click("#content .submit-row input[type=submit]")
        page.wait_for_selector("#content .submit-row input[name=_confirm]")
        assert_same_line(
            page,
            f"import-check-{language}",
            "#content .submit-row input[name=_confirm]",
            "#content .submit-row a.cancel-link",
        )
        # The cancel link still goes back.
        page.goto(f"{base}/admin/crm_sms/contact/")
        page.check(f"input.action-select[value='{contacts[1].pk}']")
        page.select_option("select[name=action]", "opt_out_action")
        page.click("button[name=index]")
        page.click("#consent-form a.cancel-link")
        page.wait_for_url(f"{base}/admin/crm_sms/contact/")
    finally:
        browser.close()
