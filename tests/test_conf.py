import pytest
from django.core.exceptions import ImproperlyConfigured

from crm_sms import conf
from crm_sms.backends import get_backend
from crm_sms.backends.console import ConsoleBackend
from crm_sms.backends.locmem import LocmemBackend

MEGAFON = "crm_sms.backends.megafon.MegafonBackend"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "megafon://LOGIN:PASSWORD@a2p-api.megalabs.ru/?sender=MyCompany",
            {
                "BACKEND": MEGAFON,
                "OPTIONS": {
                    "login": "LOGIN",
                    "password": "PASSWORD",
                    "base_url": "https://a2p-api.megalabs.ru",
                    "sender": "MyCompany",
                },
            },
        ),
        (
            "megafon+http://LOGIN:PASSWORD@127.0.0.1:8999/?sender=Test",
            {
                "BACKEND": MEGAFON,
                "OPTIONS": {
                    "login": "LOGIN",
                    "password": "PASSWORD",
                    "base_url": "http://127.0.0.1:8999",
                    "sender": "Test",
                },
            },
        ),
        (
            # a password with ':', '@', '/' and '%', URL-encoded
            "megafon://user%40corp:p%3Ass%40w%2Frd%25@a2p-api.megalabs.ru/",
            {
                "BACKEND": MEGAFON,
                "OPTIONS": {
                    "login": "user@corp",
                    "password": "p:ss@w/rd%",
                    "base_url": "https://a2p-api.megalabs.ru",
                },
            },
        ),
        (
            # the same password with ':' and '@' left raw also reads right
            "megafon://user:p:ss@word@a2p-api.megalabs.ru/",
            {
                "BACKEND": MEGAFON,
                "OPTIONS": {
                    "login": "user",
                    "password": "p:ss@word",
                    "base_url": "https://a2p-api.megalabs.ru",
                },
            },
        ),
        (
            "megafon://L:P@a2p-api.megalabs.ru/?sender=My%20Shop&rate_limit=12.5",
            {
                "BACKEND": MEGAFON,
                "OPTIONS": {
                    "login": "L",
                    "password": "P",
                    "base_url": "https://a2p-api.megalabs.ru",
                    "sender": "My Shop",
                },
                "RATE_LIMIT": 12.5,
            },
        ),
        (
            "smsru://ABCD-1234@sms.ru/?sender=Shop",
            {
                "BACKEND": "crm_sms.backends.smsru.SmsRuBackend",
                "OPTIONS": {"api_id": "ABCD-1234", "base_url": "https://sms.ru", "sender": "Shop"},
            },
        ),
        ("console://", {"BACKEND": "crm_sms.backends.console.ConsoleBackend", "OPTIONS": {}}),
        ("locmem://", {"BACKEND": "crm_sms.backends.locmem.LocmemBackend", "OPTIONS": {}}),
        ("dummy://", {"BACKEND": "crm_sms.backends.dummy.DummyBackend", "OPTIONS": {}}),
    ],
)
def test_parse_sms_url(url, expected):
    assert conf.parse_sms_url(url) == expected


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("nosuch://x", "Unknown SMS provider scheme 'nosuch'"),
        ("megafon+ftp://a:b@host/", "Unknown transport 'ftp'"),
    ],
)
def test_parse_sms_url_errors(url, fragment):
    with pytest.raises(ImproperlyConfigured, match=fragment):
        conf.parse_sms_url(url)


def test_settings_from_env_maps_every_variable():
    result = conf.settings_from_env(
        {
            "SMS_URL": "megafon://L:P@a2p-api.megalabs.ru/?sender=Shop",
            "SMS_URL_BACKUP": "locmem://",
            "SMS_URL_FAST": "console://?rate_limit=100",
            "SMS_PUBLIC_URL": "https://crm.example.com",
            "SMS_CALLBACK_TOKEN": "s3cret",
            "SMS_RATE_LIMIT": "10",
            "SMS_CLAIM_TIMEOUT": "2.5",
            "SMS_MAX_ATTEMPTS": "7",
            "SMS_RETRY_BACKOFF": "0.5",
            "UNRELATED": "x",
        }
    )
    assert set(result["PROVIDERS"]) == {"default", "backup", "fast"}
    assert result["PROVIDERS"]["default"]["RATE_LIMIT"] == 10.0
    assert result["PROVIDERS"]["backup"]["RATE_LIMIT"] == 10.0
    assert result["PROVIDERS"]["fast"]["RATE_LIMIT"] == 100.0  # its own limit wins
    assert result["PUBLIC_URL"] == "https://crm.example.com"
    assert result["CALLBACK_TOKEN"] == "s3cret"
    assert result["CLAIM_TIMEOUT"] == 2.5
    assert result["MAX_ATTEMPTS"] == 7
    assert result["RETRY_BACKOFF"] == 0.5


def test_settings_from_env_without_default_picks_the_first_named_provider():
    result = conf.settings_from_env({"SMS_URL_MAIN": "locmem://"})
    assert result["DEFAULT_PROVIDER"] == "main"


def test_settings_from_env_bad_number_names_the_variable():
    with pytest.raises(ImproperlyConfigured, match="SMS_MAX_ATTEMPTS"):
        conf.settings_from_env({"SMS_MAX_ATTEMPTS": "many"})


def test_callback_tokens_accept_a_list_or_comma_separated(settings):
    settings.CRM_SMS = {**settings.CRM_SMS, "CALLBACK_TOKEN": "new, old"}
    assert conf.callback_tokens() == ["new", "old"]
    settings.CRM_SMS = {**settings.CRM_SMS, "CALLBACK_TOKEN": ["a", "b"]}
    assert conf.callback_tokens() == ["a", "b"]
    settings.CRM_SMS = {**settings.CRM_SMS, "CALLBACK_TOKEN": None}
    assert conf.callback_tokens() == []


def test_get_backend_is_one_instance_per_alias_and_follows_settings(settings):
    settings.CRM_SMS = {
        "PROVIDERS": {
            "default": {"BACKEND": "crm_sms.backends.locmem.LocmemBackend", "RATE_LIMIT": 5},
            "dev": {"BACKEND": "crm_sms.backends.console.ConsoleBackend"},
        }
    }
    backend = get_backend()
    assert isinstance(backend, LocmemBackend)
    assert backend is get_backend("default")
    assert backend.rate_limit == 5.0
    assert isinstance(get_backend("dev"), ConsoleBackend)
    settings.CRM_SMS = {
        "PROVIDERS": {"default": {"BACKEND": "crm_sms.backends.dummy.DummyBackend"}}
    }
    assert type(get_backend()).__name__ == "DummyBackend"


def test_get_backend_unknown_alias_names_the_env_variable(settings):
    settings.CRM_SMS = {
        "PROVIDERS": {"default": {"BACKEND": "crm_sms.backends.dummy.DummyBackend"}}
    }
    with pytest.raises(ImproperlyConfigured, match="SMS_URL_BULK"):
        get_backend("bulk")
