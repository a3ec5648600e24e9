import pytest
from django.core.exceptions import ImproperlyConfigured

from crm_sms import conf
from crm_sms.backends import get_backend
from crm_sms.backends.console import ConsoleBackend
from crm_sms.backends.locmem import LocmemBackend
from crm_sms.backends.options import Option
from crm_sms.exceptions import ConfigurationError

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


# --- the scheme registry ---------------------------------------------------------------------

ACME = "tests.test_http_backend.AcmeBackend"


def test_site_schemes_add_to_the_builtins(settings):
    settings.CRM_SMS = {"SCHEMES": {"acme": ACME}}
    assert conf.registered_schemes()["megafon"] == MEGAFON
    assert conf.parse_sms_url("acme+http://K:S@127.0.0.1:8080/?sender=X") == {
        "BACKEND": ACME,
        "OPTIONS": {"key": "K", "secret": "S", "base_url": "http://127.0.0.1:8080", "sender": "X"},
    }


def test_a_site_scheme_may_be_a_class_and_may_replace_a_builtin(settings):
    from tests.test_http_backend import AcmeBackend

    settings.CRM_SMS = {"SCHEMES": {"megafon": AcmeBackend}}
    assert conf.parse_sms_url("megafon://K@host/")["BACKEND"] == ACME


def test_an_env_url_of_a_site_scheme_resolves_on_first_use(settings):
    from tests.test_http_backend import AcmeBackend

    providers = conf.settings_from_env(
        {"SMS_URL_PROMO": "acme://K:S@api.acme.example/?priority=2", "SMS_RATE_LIMIT": "5"}
    )
    assert providers["PROVIDERS"]["promo"] == {
        "URL": "acme://K:S@api.acme.example/?priority=2",
        "RATE_LIMIT": 5.0,
    }
    settings.CRM_SMS = {"SCHEMES": {"acme": ACME}, **providers}
    backend = get_backend("promo")
    assert isinstance(backend, AcmeBackend)
    assert (backend.options["priority"], backend.rate_limit) == (2, 5.0)


def test_a_url_entry_may_be_written_by_hand_and_its_own_rate_limit_wins(settings):
    settings.CRM_SMS = {
        "PROVIDERS": {"default": {"URL": "console://?rate_limit=7", "RATE_LIMIT": 1}}
    }
    assert conf.provider_config() == {
        "BACKEND": "crm_sms.backends.console.ConsoleBackend",
        "OPTIONS": {},
        "RATE_LIMIT": 7.0,
    }


# --- a bad SMS_URL never stops the settings from loading ------------------------------------

BAD_URLS = [
    ("nosuch://x", "Unknown SMS provider scheme 'nosuch'"),
    ("megafon+ftp://a:b@host/", "Unknown transport 'ftp'"),
    ("megafon://u:p@[::1/", "cannot be read"),
    ("a2p-api.megalabs.ru", "cannot be read"),
    ("megafon://u:p@host/?rate_limit=abc", "rate_limit='abc' is not a number"),
    ("console://someone@host/", "takes no user"),
]


@pytest.mark.parametrize(("url", "words"), BAD_URLS)
def test_a_bad_sms_url_is_kept_and_fails_on_use_naming_the_variable(settings, url, words):
    result = conf.settings_from_env({"SMS_URL": "console://", "SMS_URL_BULK": url})
    assert result["PROVIDERS"]["bulk"] == {"URL": url}
    settings.CRM_SMS = result
    with pytest.raises(ConfigurationError) as info:
        conf.provider_config("bulk")
    assert "SMS_URL_BULK" in str(info.value) and words in str(info.value)
    assert isinstance(get_backend(), ConsoleBackend)  # the other providers still work


def test_sending_through_a_bad_sms_url_is_a_validation_error(settings, db):
    from django.core.exceptions import ValidationError

    from crm_sms import send_sms

    settings.CRM_SMS = conf.settings_from_env({"SMS_URL": "megafon://L:P@host/?sendr=Shop"})
    with pytest.raises(ValidationError) as info:
        send_sms("+79001234212", "Hi")
    text = " ".join(info.value.messages)
    assert "SMS_URL" in text and "did you mean 'sender'" in text


def test_settings_from_env_bad_rate_limit_names_the_variable():
    with pytest.raises(ImproperlyConfigured, match="SMS_RATE_LIMIT"):
        conf.settings_from_env({"SMS_URL": "console://", "SMS_RATE_LIMIT": "fast"})


def test_a_rate_limit_that_is_not_a_number_is_refused_by_the_backend():
    with pytest.raises(ConfigurationError, match="rate_limit='abc' is not a number"):
        ConsoleBackend("default", {}, rate_limit="abc")


def test_env_variable_names():
    assert conf.env_variable("default") == "SMS_URL"
    assert conf.env_variable("bulk") == "SMS_URL_BULK"


# --- declared options ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        (Option("n", int), "8", 8),
        (Option("n", int), 8.0, 8),
        (Option("n", int, 3), "", 3),
        (Option("x", float), "0.25", 0.25),
        (Option("b", bool), "Yes", True),
        (Option("b", bool), "0", False),
        (Option("b", bool), True, True),
        (Option("s", str), 42, "42"),
        (Option("s", str, "d"), None, "d"),
    ],
)
def test_option_conversion(option, value, expected):
    assert option.convert(value) == expected


@pytest.mark.parametrize(
    ("option", "value", "reason"),
    [
        (Option("n", int), "many", "is not a number"),
        (Option("x", float, minimum=0.001), "0", "must be at least 0.001"),
        (Option("b", bool), "maybe", "is not a yes/no value"),
    ],
)
def test_option_conversion_errors(option, value, reason):
    with pytest.raises(ValueError, match=reason):
        option.convert(value)


def test_every_builtin_backend_declares_its_url_options():
    from crm_sms.backends import load_backend_class

    for scheme, path in conf.BUILTIN_SCHEMES.items():
        cls = load_backend_class(path)
        table = cls.option_table()
        assert "sender" in table, scheme
        for name in (cls.url_user_option, cls.url_password_option):
            assert name is None or name in table, scheme


def test_backend_modules_load_no_models():
    """settings_from_env imports built-in backends while settings.py is read (no apps yet);
    a class whose module cannot load then leaves its URL for later, never a traceback."""
    import subprocess
    import sys

    code = (
        "import sys; from crm_sms.conf import settings_from_env; "
        "c = settings_from_env({'SMS_URL': 'megafon://L:P@h/', 'SMS_URL_B': 'smsru://K@h/'}); "
        "assert 'URL' not in c['PROVIDERS']['default'], c; "
        "assert 'crm_sms.models' not in sys.modules; "
        "c = settings_from_env({'SMS_URL': 'x://h/'}, schemes={'x': 'crm_sms.models.Message'}); "
        "assert c['PROVIDERS'] == {'default': {'URL': 'x://h/'}}, c; print('ok')"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "ok", done.stderr


def test_the_settings_are_merged_again_when_they_change(settings):
    """``sms_settings`` keeps its merge while ``CRM_SMS`` stays the same object, and merges
    again when Django says it changed, even to the same dict changed in place."""
    crm = {**settings.CRM_SMS, "REPORTS": "queued"}
    settings.CRM_SMS = crm
    assert conf.report_mode() == "queued"
    assert conf.sms_settings() is conf.sms_settings()
    crm["REPORTS"] = "direct"
    settings.CRM_SMS = crm
    assert conf.report_mode() == "direct"
