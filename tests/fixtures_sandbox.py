"""Fixtures for the MegaFon sandbox (``crm_sms.sandbox``): a running emulator on a free port.

- ``megafon_sandbox``: a started ``SandboxServer`` (login/password "test"), stopped afterwards.
- ``megafon_provider``: the same sandbox configured as CRM_SMS PROVIDERS["default"] through
  ``parse_sms_url(sandbox.sms_url())`` (as an SMS_URL would be), with a short read timeout and
  fast retries; returns the sandbox.
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
def megafon_provider(megafon_sandbox, outbox_settings):
    """The default provider is ``megafon_sandbox`` (configured from its SMS_URL, as the
    environment would), with a 0.5 s read timeout and the outbox's fast test retries;
    returns the sandbox."""
    from tests.fixtures_outbox import sandbox_provider_config

    crm_sms = dict(outbox_settings.CRM_SMS)
    crm_sms["PROVIDERS"] = {
        "default": sandbox_provider_config(megafon_sandbox, read_timeout=0.5, connect_timeout=2)
    }
    crm_sms["DEFAULT_PROVIDER"] = "default"
    outbox_settings.CRM_SMS = crm_sms
    megafon_sandbox.configure(timeout_s=1.0)
    return megafon_sandbox
