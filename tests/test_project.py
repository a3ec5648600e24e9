"""The demo site's settings and the distribution's contents."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from django.core.management.utils import get_random_secret_key

ROOT = Path(__file__).resolve().parent.parent


def run_settings(env: dict[str, str], code: str) -> subprocess.CompletedProcess:
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SMS_", "DEBUG", "SECRET", "SECURE_"))
    }
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); " + code],
        env={**clean, "DJANGO_SETTINGS_MODULE": "config.settings", **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_debug_off_refuses_the_development_secret_key():
    result = run_settings({"DEBUG": "0"}, "")
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr
    # A key of your own starts the site (a weak one is refused: test_deploy_settings.py).
    ok = run_settings({"DEBUG": "0", "SECRET_KEY": get_random_secret_key()}, "print('ok')")
    assert ok.returncode == 0, ok.stderr


def test_environment_fills_crm_sms_and_defaults():
    result = run_settings(
        {
            "SMS_URL": "megafon://L:P%40ss@a2p-api.megalabs.ru/?sender=Shop",
            "SMS_URL_BACKUP": "locmem://",
            "SMS_PUBLIC_URL": "https://crm.example.com",
            "SMS_RETRY_BACKOFF": "0.25",
        },
        "from django.conf import settings as s; c = s.CRM_SMS; "
        "print(c['PROVIDERS']['default']['OPTIONS']['password'], sorted(c['PROVIDERS']), "
        "c['PUBLIC_URL'], c['RETRY_BACKOFF'], s.TIME_ZONE, s.LANGUAGE_CODE)",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "P@ss",
        "['backup',",
        "'default']",
        "https://crm.example.com",
        "0.25",
        "Europe/Moscow",
        "ru",
    ]


def test_without_sms_url_the_demo_prints_to_the_console():
    result = run_settings(
        {}, "from crm_sms.backends import get_backend; print(type(get_backend()).__name__)"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ConsoleBackend"


@pytest.mark.slow
def test_wheel_ships_the_app_only(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(ROOT), "-w", str(tmp_path)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("crm_sms-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names}
    assert top <= {"crm_sms", next(n for n in top if n.endswith(".dist-info"))}
    assert "crm_sms/migrations/0001_initial.py" in names
    for folder in ("templates", "static", "locale"):
        if any((ROOT / "crm_sms" / folder).rglob("*.*")):
            assert any(n.startswith(f"crm_sms/{folder}/") for n in names), folder
    assert any(n.endswith("/LC_MESSAGES/django.mo") for n in names) or not any(
        (ROOT / "crm_sms" / "locale").rglob("*.mo")
    )
