"""``crm_sms.send_sms`` and ``crm_sms.send_campaign`` spell out the outbox's signatures."""

import inspect

import pytest

import crm_sms
from crm_sms import outbox


@pytest.mark.parametrize("name", ["send_sms", "send_campaign"])
def test_public_functions_have_the_outbox_signature(name):
    public = inspect.signature(getattr(crm_sms, name))
    real = inspect.signature(getattr(outbox, name))
    assert list(public.parameters) == list(real.parameters)
    for param in public.parameters.values():
        other = real.parameters[param.name]
        assert (param.kind, param.default) == (other.kind, other.default), param.name
        assert str(param.annotation) == str(other.annotation), param.name
    assert str(public.return_annotation) == str(real.return_annotation)


def test_no_keyword_catch_all():
    for function in (crm_sms.send_sms, crm_sms.send_campaign):
        kinds = {p.kind for p in inspect.signature(function).parameters.values()}
        assert inspect.Parameter.VAR_KEYWORD not in kinds


def test_send_sms_passes_every_argument_through(locmem_provider, db):
    message = crm_sms.send_sms("8 (900) 123-42-12", "Hi", sender="Shop", provider="other")
    assert (message.phone, message.sender, message.provider) == ("+79001234212", "Shop", "other")
