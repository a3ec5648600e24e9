import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core import checks
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from crm_sms import conf
from crm_sms.checks import check_providers

ROOT = Path(__file__).resolve().parent.parent


def ids(settings, crm_sms):
    settings.CRM_SMS = crm_sms
    return {message.id: message for message in check_providers()}


def megafon(url):
    return {"PROVIDERS": {"default": conf.parse_sms_url(url)}}


def test_a_good_configuration_passes(settings):
    assert ids(settings, megafon("megafon://L:P@a2p-api.megalabs.ru/?sender=MyCompany")) == {}


def test_no_provider_is_a_warning(settings):
    found = ids(settings, {"PROVIDERS": {}})
    assert "crm_sms.W001" in found
    assert "SMS_URL" in found["crm_sms.W001"].hint


def test_unknown_backend_path(settings):
    found = ids(
        settings,
        {
            "PROVIDERS": {"bulk": {"BACKEND": "crm_sms.backends.nosuch.Backend"}},
            "DEFAULT_PROVIDER": "bulk",
        },
    )
    assert "crm_sms.E002" in found
    assert "SMS_URL_BULK" in found["crm_sms.E002"].hint
    assert "crm_sms.backends.nosuch.Backend" in found["crm_sms.E002"].msg


def test_default_provider_missing(settings):
    found = ids(
        settings,
        {
            "PROVIDERS": {"a": {"BACKEND": "crm_sms.backends.dummy.DummyBackend"}},
            "DEFAULT_PROVIDER": "b",
        },
    )
    assert "crm_sms.E001" in found


def test_provider_without_credentials(settings):
    found = ids(settings, megafon("megafon://a2p-api.megalabs.ru/?sender=MyCompany"))
    assert "crm_sms.E010" in found
    assert "SMS_URL" in found["crm_sms.E010"].hint


def test_sender_the_provider_would_refuse(settings):
    # The seed article's sender has 12 characters; MegaFon allows 11.
    found = ids(settings, megafon("megafon://L:P@a2p-api.megalabs.ru/?sender=Johnny_Viper"))
    assert "crm_sms.E004" in found
    assert "Johnny_Viper" in found["crm_sms.E004"].msg
    assert "SMS_URL" in found["crm_sms.E004"].hint


def test_bad_numbers(settings):
    found = ids(
        settings,
        {
            "PROVIDERS": {"default": {"BACKEND": "crm_sms.backends.dummy.DummyBackend"}},
            "MAX_ATTEMPTS": 0,
        },
    )
    assert "crm_sms.E005" in found
    assert "SMS_MAX_ATTEMPTS" in found["crm_sms.E005"].hint


def test_manage_check_reports_at_start_up(settings):
    settings.CRM_SMS = megafon("megafon://a2p-api.megalabs.ru/?sender=Johnny_Viper")
    with pytest.raises(SystemCheckError) as excinfo:
        call_command("check", tags=["crm_sms"])
    assert "crm_sms.E010" in str(excinfo.value)
    assert "crm_sms.E004" in str(excinfo.value)


# --- a bad SMS_URL is a check error naming the variable, never a traceback ---------------------


def from_env(settings, **environ):
    settings.CRM_SMS = conf.settings_from_env(environ)
    return {message.id: message for message in check_providers()}


@pytest.mark.parametrize(
    ("url", "check_id", "words"),
    [
        ("megafon://L:P@a2p-api.megalabs.ru/?sender=Shop&rate_limit=abc", "E008", "rate_limit"),
        ("megafon://L:P@a2p-api.megalabs.ru/?sendr=Shop", "E007", "did you mean 'sender'"),
        ("megafon://L:P@a2p-api.megalabs.ru/?sender=Shop&read_timeout=x", "E008", "read_timeout"),
        ("smsru://K@sms.ru/?test=maybe", "E008", "test='maybe'"),
        ("nosuch://L:P@host/", "E006", "Unknown SMS provider scheme 'nosuch'"),
        ("megafon+ftp://L:P@host/", "E006", "Unknown transport 'ftp'"),
        ("megafon://L:P@[::1/", "E006", "cannot be read"),
        ("just-a-host.example", "E006", "cannot be read"),
    ],
)
def test_bad_sms_url(settings, url, check_id, words):
    found = from_env(settings, SMS_URL_BULK=url, SMS_URL="console://")
    problem = found[f"crm_sms.{check_id}"]
    assert problem.level == checks.ERROR
    assert "SMS_URL_BULK" in problem.msg and words in problem.msg
    assert "P@" not in problem.msg + (problem.hint or "")  # no password shown


def test_the_secret_of_an_ill_typed_option_is_not_shown(settings):
    settings.CRM_SMS = {
        "SCHEMES": {"acme": "tests.test_http_backend.AcmeBackend"},
        **conf.settings_from_env({"SMS_URL": "acme://KEY:SECRET@host/?priority=x"}),
    }
    [problem] = check_providers()
    assert problem.id == "crm_sms.E008" and "priority='x'" in problem.msg
    assert "SECRET" not in problem.msg


def test_a_site_scheme_checks_clean_once_registered(settings):
    environ = {"SMS_URL": "acme://K:S@api.acme.example/?sender=Shop"}
    assert "crm_sms.E006" in from_env(settings, **environ)
    settings.CRM_SMS = {
        "SCHEMES": {"acme": "tests.test_http_backend.AcmeBackend"},
        **conf.settings_from_env(environ),
    }
    assert check_providers() == []


def test_a_scheme_whose_class_cannot_be_imported(settings):
    settings.CRM_SMS = {
        "SCHEMES": {"acme": "myproject.nosuch.AcmeBackend"},
        **conf.settings_from_env({"SMS_URL": "acme://K@host/"}),
    }
    [problem] = check_providers()
    assert problem.id == "crm_sms.E002" and "SCHEMES" in problem.hint


def test_a_hand_written_provider_with_bad_options(settings):
    found = ids(
        settings,
        {
            "PROVIDERS": {
                "default": {
                    "BACKEND": "crm_sms.backends.locmem.LocmemBackend",
                    "OPTIONS": {"colour": "red"},
                    "RATE_LIMIT": "fast",
                }
            }
        },
    )
    assert {"crm_sms.E007", "crm_sms.E008"} <= set(found)


def run_manage(*args, **environ) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SMS_")}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        env={**clean, "DJANGO_SETTINGS_MODULE": "config.settings", **environ},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("url", "check_id"),
    [
        ("nosuch://L:s3cret@host/", "crm_sms.E006"),
        ("megafon://L:s3cret@a2p-api.megalabs.ru/?sendr=Shop", "crm_sms.E007"),
        ("megafon://L:s3cret@a2p-api.megalabs.ru/?sender=Shop&rate_limit=abc", "crm_sms.E008"),
        ("megafon://L:s3cret@[::1/", "crm_sms.E006"),
    ],
)
def test_manage_py_check_reports_a_bad_sms_url_cleanly(url, check_id):
    done = run_manage("check", "--tag", "crm_sms", SMS_URL=url)
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert check_id in output and "SMS_URL" in output
    assert "Traceback" not in output and "s3cret" not in output


def test_the_site_still_starts_with_a_bad_sms_url():
    done = run_manage(
        "shell",
        "-c",
        "from django.conf import settings; print(settings.CRM_SMS['PROVIDERS'])",
        SMS_URL="nosuch://x",
    )
    assert done.returncode == 0, done.stderr
    assert "{'default': {'URL': 'nosuch://x'}}" in done.stdout


# --- SMS_REPORTS: "direct" or "queued" ---------------------------------------------------------


@pytest.mark.parametrize("value", ["queue", "batched", 1])
def test_an_unknown_report_mode_is_an_error(settings, value):
    found = from_env(settings, SMS_URL="console://")
    assert "crm_sms.E009" not in found
    settings.CRM_SMS = {**settings.CRM_SMS, "REPORTS": value}
    problem = {message.id: message for message in check_providers()}["crm_sms.E009"]
    assert problem.level == checks.ERROR
    assert "SMS_REPORTS" in problem.msg and 'CRM_SMS["REPORTS"]' in problem.msg
    assert repr(value) in problem.msg
    assert '"direct"' in problem.msg and '"queued"' in problem.msg


@pytest.mark.parametrize("value", ["direct", "queued", " Queued ", "", None])
def test_the_report_modes_pass(settings, value):
    settings.CRM_SMS = {
        "PROVIDERS": {"default": {"BACKEND": "crm_sms.backends.dummy.DummyBackend"}},
        "REPORTS": value,
    }
    assert check_providers() == []


def test_an_unknown_report_mode_from_the_environment_stops_manage_py():
    done = run_manage("check", "--tag", "crm_sms", SMS_URL="console://", SMS_REPORTS="sometimes")
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "crm_sms.E009" in output and "SMS_REPORTS" in output and "'sometimes'" in output
    assert "Traceback" not in output
