"""Production settings of the demo site (issue 10, point 8): `check --deploy` is clean with
`DEBUG=0` and the variables docs/deploy.md documents, HTTPS works behind nginx, and a weak
`SECRET_KEY` stops the site at start-up."""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management.utils import get_random_secret_key

ROOT = Path(__file__).resolve().parent.parent
# Variables these tests set themselves: the developer's own must not leak in.
OWN = ("DEBUG", "SECRET", "SECURE_", "SESSION_", "CSRF_", "ALLOWED_", "SMS_", "DATABASE_", "CACHE_")


def documented_env() -> dict[str, str]:
    """The `/srv/crm/.env` block of docs/deploy.md, as a dict."""
    text = (ROOT / "docs" / "deploy.md").read_text()
    block = re.search(r"```sh\n(# /srv/crm/\.env.*?)```", text, re.S)
    assert block, "docs/deploy.md lost its .env example"
    pairs = (
        line.split("=", 1)
        for line in block.group(1).splitlines()
        if line and not line.startswith("#")
    )
    return {key: value for key, value in pairs}


def production_env() -> dict[str, str]:
    """The documented variables with the placeholders replaced, as an operator would."""
    env = documented_env()
    env["SECRET_KEY"] = get_random_secret_key()
    env["SMS_CALLBACK_TOKEN"] = secrets.token_urlsafe(32)
    return env


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(OWN)}
    return subprocess.run(
        [sys.executable, *args],
        # No .env of the developer's: read_env() does not override variables that are set.
        env={**clean, "DJANGO_SETTINGS_MODULE": "config.settings", **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_deploy_is_clean_with_the_documented_variables():
    result = run(["manage.py", "check", "--deploy", "--fail-level", "WARNING"], production_env())
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout
    assert "WARNINGS" not in result.stderr


def test_check_deploy_is_clean_with_debug_off_alone():
    # The defaults with DEBUG=0 are the safe ones: nothing to remember but the key.
    env = {"DEBUG": "0", "SECRET_KEY": get_random_secret_key()}
    result = run(["manage.py", "check", "--deploy", "--fail-level", "WARNING"], env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_every_default_can_be_changed_in_the_environment():
    env = {
        **production_env(),
        "SECURE_HSTS_SECONDS": "3600",
        "SECURE_HSTS_INCLUDE_SUBDOMAINS": "0",
        "SECURE_HSTS_PRELOAD": "0",
        "SECURE_PROXY_SSL_HEADER": "HTTP_X_FORWARDED_SSL,on",
    }
    code = (
        "import django, json; django.setup(); from django.conf import settings as s; "
        "print(json.dumps([s.SECURE_HSTS_SECONDS, s.SECURE_HSTS_INCLUDE_SUBDOMAINS, "
        "s.SECURE_HSTS_PRELOAD, s.SECURE_PROXY_SSL_HEADER, s.SECURE_SSL_REDIRECT]))"
    )
    result = run(["-c", code], env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [3600, False, False, ["HTTP_X_FORWARDED_SSL", "on"], True]
    warnings = run(["manage.py", "check", "--deploy"], env).stderr
    assert "security.W005" in warnings and "security.W021" in warnings  # reminded, not hidden


def test_debug_on_keeps_plain_http_for_development():
    code = (
        "import django, json; django.setup(); from django.conf import settings as s; "
        "print(json.dumps([s.SECURE_SSL_REDIRECT, s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, "
        "s.SECURE_HSTS_SECONDS, s.SECURE_PROXY_SSL_HEADER]))"
    )
    result = run(["-c", code], {"DEBUG": "1"})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [False, False, False, 0, None]


BEHIND_NGINX = """
import django, json
django.setup()
from django.test import Client
client = Client()
plain = client.get("/admin/login/", HTTP_HOST="crm.example.com")
https = client.get("/admin/login/", HTTP_HOST="crm.example.com", HTTP_X_FORWARDED_PROTO="https")
print(json.dumps({
    "plain": [plain.status_code, plain.get("Location")],
    "https": [https.status_code, https.get("Strict-Transport-Security")],
    "csrf_secure": bool(https.cookies["csrftoken"]["secure"]),
}))
"""


def test_https_behind_nginx_redirects_plain_http_and_sends_hsts():
    result = run(["-c", BEHIND_NGINX], production_env())
    assert result.returncode == 0, result.stderr
    answers = json.loads(result.stdout.strip().splitlines()[-1])
    assert answers["plain"] == [301, "https://crm.example.com/admin/login/"]
    assert answers["https"] == [200, "max-age=31536000; includeSubDomains; preload"]
    assert answers["csrf_secure"]


@pytest.mark.parametrize(
    "key",
    [
        "replace-with-your-own-key",  # the documented placeholder, copied as it is
        "x" * 60,  # long, but one character
        get_random_secret_key()[:49],
        "django-insecure-" + get_random_secret_key(),
    ],
    ids=["placeholder", "one-character", "49-characters", "insecure-prefix"],
)
def test_a_weak_secret_key_refuses_to_start(key):
    result = run(["manage.py", "check"], {**production_env(), "SECRET_KEY": key})
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert "ImproperlyConfigured: DEBUG=0 needs a strong SECRET_KEY" in last
    assert "get_random_secret_key" in last  # how to make one
    assert key not in result.stderr  # the key itself is not printed


def test_a_missing_secret_key_still_refuses_to_start():
    env = production_env()
    del env["SECRET_KEY"]
    result = run(["manage.py", "check"], env)
    assert result.returncode != 0
    assert "SECRET_KEY of your own" in result.stderr
