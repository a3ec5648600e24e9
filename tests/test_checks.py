import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from crm_sms import conf
from crm_sms.checks import check_providers


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
