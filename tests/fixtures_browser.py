"""A logged-in admin page in Debian's chromium (Playwright), for the browser tests of the admin's
look: ``browser_page`` gives the live server's URL and ``open_page(language, scheme)``, which
opens a 1366 x 900 page in that language and colour scheme, logged in as ``admin``. The test
module's ``SHOTS`` folder is created for its screenshots."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"


def log_in(page: Any, base: str) -> None:
    from playwright.sync_api import expect

    page.goto(f"{base}/admin/login/?next=/admin/")
    page.fill("#id_username", "admin")
    page.fill("#id_password", "password")
    page.click("input[type=submit]")
    expect(page.locator("#user-tools")).to_be_visible()


@pytest.fixture
def browser_page(
    request, django_db_setup, live_server, sms_providers, admin_user, monkeypatch
) -> Iterator[tuple[str, Any]]:
    from playwright.sync_api import sync_playwright

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    shots = getattr(request.module, "SHOTS", None)
    if shots is not None:
        shots.mkdir(parents=True, exist_ok=True)

    def open_page(pw: Any, language: str, scheme: str = "light") -> tuple[Any, Any]:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"]
        )
        context = browser.new_context(
            locale="ru-RU" if language == "ru" else "en-US",
            color_scheme=scheme,
            viewport={"width": 1366, "height": 900},
            extra_http_headers={"Accept-Language": language},
        )
        page = context.new_page()
        page.set_default_timeout(15_000)
        log_in(page, live_server.url)
        return browser, page

    with sync_playwright() as pw:
        yield live_server.url, lambda language, scheme="light": open_page(pw, language, scheme)
