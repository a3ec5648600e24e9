"""Provider balances: the backend contract, SMS.RU / Twilio / SMS-Uslugi against their sandboxes
on loopback, the cached balance and the warning before a campaign, ``manage.py sms_balance``."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.cache import cache
from django.core.management import CommandError, call_command

from crm_sms import outbox
from crm_sms.backends import get_backend, load_backend_class
from crm_sms.backends.base import Balance, BaseBackend
from crm_sms.conf import BUILTIN_SCHEMES, parse_sms_url
from crm_sms.costs import balance_warning, cached_balance, forget_balance, get_balance
from crm_sms.exceptions import ProviderError
from crm_sms.models import Contact
from crm_sms.sandbox import SandboxServer

ROOT = Path(__file__).resolve().parent.parent
SUPPORTED = {"smsru", "twilio", "smsuslugi", "smsc"}


@pytest.fixture(autouse=True)
def _empty_cache():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def sandboxes():
    """Started sandboxes by provider name; stopped afterwards."""
    started: dict[str, SandboxServer] = {}

    def start(name: str, **kwargs) -> SandboxServer:
        started[name] = SandboxServer(provider=name, **kwargs).start()
        return started[name]

    yield start
    for server in started.values():
        server.stop()


def backend_of(sandbox: SandboxServer, alias: str = "default") -> BaseBackend:
    config = parse_sms_url(sandbox.sms_url())
    return load_backend_class(config["BACKEND"])(alias, config["OPTIONS"])


def configure(settings, **providers):
    """PROVIDERS from ``alias=config`` (a sandbox, or a config dict); the first is default."""
    crm = dict(getattr(settings, "CRM_SMS", {}))
    crm["PROVIDERS"] = {
        alias: parse_sms_url(value.sms_url()) if isinstance(value, SandboxServer) else value
        for alias, value in providers.items()
    }
    crm["DEFAULT_PROVIDER"] = next(iter(providers))
    settings.CRM_SMS = crm


# --- the contract ------------------------------------------------------------------------------
def test_which_backends_can_read_a_balance():
    for scheme, path in BUILTIN_SCHEMES.items():
        cls = load_backend_class(path)
        assert cls.supports_balance == (scheme in SUPPORTED), scheme


def test_a_backend_without_a_balance_request_says_so():
    with pytest.raises(NotImplementedError):
        BaseBackend().balance()
    assert BaseBackend.supports_balance is False


def test_defining_balance_declares_support():
    class WithBalance(BaseBackend):
        def balance(self) -> Balance:
            return Balance(Decimal(1), "RUB")

    class Refusing(WithBalance):
        supports_balance = False

    assert WithBalance.supports_balance is True
    assert Refusing.supports_balance is False


# --- against the sandboxes ---------------------------------------------------------------------
def test_smsru_balance(sandboxes):
    sandbox = sandboxes("smsru")
    backend = backend_of(sandbox)
    assert backend.balance() == Balance(Decimal("100.5"), "RUB")
    assert sandbox.requests[-1].path == "/my/balance"
    sandbox.configure(login="another-api-id")  # SMS.RU answers a wrong api_id with code 200
    with pytest.raises(ProviderError) as caught:
        backend.balance()
    assert caught.value.result.error_code == "200"
    assert backend.api_id not in str(caught.value) + repr(caught.value.result)


def test_smsru_balance_when_smsru_is_down(sandboxes):
    sandbox = sandboxes("smsru")
    backend = backend_of(sandbox)
    sandbox.stop()
    with pytest.raises(ProviderError, match="SMS.RU did not answer properly"):
        backend.balance()


def test_twilio_balance(sandboxes):
    from crm_sms.backends.twilio import AccountBalance

    sandbox = sandboxes("twilio")
    backend = backend_of(sandbox)
    assert backend.balance() == Balance(Decimal("25.50"), "USD")
    assert AccountBalance is Balance  # the older name
    sandbox.configure(password="changed")
    with pytest.raises(ProviderError) as caught:
        backend.balance()
    assert caught.value.result.error_code == "http_401"


def test_smsuslugi_balance(sandboxes):
    sandbox = sandboxes("smsuslugi")
    backend = backend_of(sandbox)
    assert backend.balance() == Balance(Decimal("1520.75"), "RUB")
    assert sandbox.requests[-1].path == "/API/XML/balance.php"
    sandbox.configure(password="changed")
    with pytest.raises(ProviderError) as caught:
        backend.balance()
    assert caught.value.result.error_code == "501"
    assert "test" not in caught.value.result.raw.get("password", "")


# --- cached, and the warning --------------------------------------------------------------------
def test_the_balance_is_asked_once_a_minute(settings, sandboxes):
    sandbox = sandboxes("smsru")
    configure(settings, default=sandbox)
    assert cached_balance() == Balance(Decimal("100.5"), "RUB")
    assert cached_balance("default") == Balance(Decimal("100.5"), "RUB")
    assert [r.path for r in sandbox.requests] == ["/my/balance"]
    forget_balance()
    cached_balance()
    assert len(sandbox.requests) == 2
    assert get_balance() == Balance(Decimal("100.5"), "RUB")  # asks now
    assert len(sandbox.requests) == 3


def test_a_failure_is_kept_too(settings, sandboxes):
    sandbox = sandboxes("smsru")
    configure(settings, default=sandbox)
    sandbox.configure(login="wrong")
    assert cached_balance() is None
    assert cached_balance() is None
    assert len(sandbox.requests) == 1


def test_no_balance_where_unsupported(settings):
    configure(settings, default={"BACKEND": "crm_sms.backends.locmem.LocmemBackend"})
    assert cached_balance() is None
    with pytest.raises(NotImplementedError):
        get_balance()


@pytest.fixture
def contacts(db):
    Contact.objects.bulk_create(
        [Contact(phone=f"+7900123420{i}", first_name="Иван") for i in range(1, 5)]
    )
    return Contact.objects.all()


def _smsru(sandbox, query: str) -> dict:
    return parse_sms_url(sandbox.sms_url() + query)


def test_warning_when_the_estimate_exceeds_the_balance(settings, sandboxes, contacts):
    sandbox = sandboxes("smsru")
    configure(settings, default=_smsru(sandbox, "&price=30"))  # 4 x 1 part x 30 = 120 > 100.50
    preview = outbox.preview_campaign(contacts, "Скидка!")
    assert preview.estimated_cost == Decimal(120)
    warning = balance_warning(preview)
    assert warning is not None
    assert "120.00 RUB" in warning and "100.50 RUB" in warning and "default" in warning
    for _ in range(3):
        balance_warning(preview)
    assert len(sandbox.requests) == 1  # the send page does not ask the provider each time


def test_no_warning_within_the_balance_or_without_a_figure(settings, sandboxes, contacts):
    sandbox = sandboxes("smsru")
    configure(settings, default=_smsru(sandbox, "&price=25"))  # 100 <= 100.50
    assert balance_warning(outbox.preview_campaign(contacts, "Скидка!")) is None
    configure(settings, default=_smsru(sandbox, ""))  # no price: no estimate
    assert balance_warning(outbox.preview_campaign(contacts, "Скидка!")) is None
    forget_balance()
    configure(settings, default=_smsru(sandbox, "&price=30&currency=USD"))  # not comparable
    assert balance_warning(outbox.preview_campaign(contacts, "Скидка!")) is None
    configure(
        settings,
        default={
            "BACKEND": "crm_sms.backends.locmem.LocmemBackend",
            "OPTIONS": {"price": "1000"},
        },
    )
    assert balance_warning(outbox.preview_campaign(contacts, "Скидка!")) is None


# --- manage.py sms_balance ----------------------------------------------------------------------
def run(*args) -> tuple[str, str, CommandError | None]:
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("sms_balance", *args, stdout=out, stderr=err)
    except CommandError as exc:
        return out.getvalue(), err.getvalue(), exc
    return out.getvalue(), err.getvalue(), None


def test_sms_balance_prints_each_provider(settings, sandboxes):
    smsru, twilio = sandboxes("smsru"), sandboxes("twilio")
    configure(
        settings,
        default=_smsru(smsru, "&price=1.95"),
        twilio=twilio,
        local={"BACKEND": "crm_sms.backends.locmem.LocmemBackend"},
    )
    out, err, error = run()
    assert error is None and err == ""
    assert out.splitlines() == [
        "default (SMS.RU): 100.5 RUB; one SMS part costs 1.95 RUB",
        "twilio (Twilio): 25.50 USD",
        "local (Local memory): balance not supported",
    ]
    out, _err, error = run("--provider", "twilio")
    assert out == "twilio (Twilio): 25.50 USD\n" and error is None


def test_sms_balance_reports_a_failure_without_a_traceback(settings, sandboxes):
    smsru = sandboxes("smsru")
    configure(settings, default=smsru, twilio=sandboxes("twilio"))
    smsru.configure(login="wrong")
    out, err, error = run()
    assert "twilio (Twilio): 25.50 USD" in out
    assert err.startswith("default (SMS.RU): error: SMS.RU error 200")
    assert error is not None and "default" in str(error)
    assert "Traceback" not in out + err
    _out, _err, error = run("--provider", "nope")
    assert "No provider 'nope' is configured" in str(error)


def test_sms_balance_from_the_command_line(sandboxes):
    smsru = sandboxes("smsru")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMS_")}
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        PYTHONPATH=str(ROOT),
        SMS_URL=smsru.sms_url(),
        SMS_URL_DOWN="smsru+http://KEY@127.0.0.1:9/?connect_timeout=1",
    )
    done = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "sms_balance"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "default (SMS.RU): 100.5 RUB" in done.stdout
    assert "down (SMS.RU): error: " in done.stderr
    assert "CommandError: The balance of down could not be read." in done.stderr
    assert "Traceback" not in done.stderr and done.returncode == 1


def test_get_backend_is_the_configured_one(settings, sandboxes):
    sandbox = sandboxes("smsuslugi")
    configure(settings, default=sandbox)
    assert get_backend().supports_balance
    assert get_balance() == Balance(Decimal("1520.75"), "RUB")
