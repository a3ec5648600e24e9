"""Fixtures for the MegaFon sandbox (``crm_sms.sandbox``): a running emulator on a free port.

- ``megafon_sandbox``: a started ``SandboxServer`` (login/password "test"), stopped afterwards.
- ``megafon_provider``: the same sandbox configured as CRM_SMS PROVIDERS["default"] through
  ``parse_sms_url(sandbox.sms_url())`` (as an SMS_URL would be); returns the sandbox.
"""

from __future__ import annotations

import pytest

from crm_sms.sandbox import SandboxServer


@pytest.fixture
def megafon_sandbox():
    """A started MegaFon emulator on 127.0.0.1 and an ephemeral port."""
    server = SandboxServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def megafon_provider(megafon_sandbox, settings):
    """Point the default provider at ``megafon_sandbox``; returns the sandbox."""
    from crm_sms.conf import parse_sms_url

    config = parse_sms_url(megafon_sandbox.sms_url())
    crm_sms = dict(getattr(settings, "CRM_SMS", {}))
    crm_sms["PROVIDERS"] = {**crm_sms.get("PROVIDERS", {}), "default": config}
    crm_sms["DEFAULT_PROVIDER"] = "default"
    settings.CRM_SMS = crm_sms
    return megafon_sandbox
