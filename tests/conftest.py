"""Shared fixtures. Each area adds its own fixtures module to pytest_plugins."""

import os
import socket

import pytest

pytest_plugins: list[str] = [
    "tests.fixtures_sandbox",
    "tests.fixtures_smsru",
    "tests.fixtures_admin",
    "tests.fixtures_outbox",
    "tests.fixtures_compliance",
    "tests.fixtures_http",
    "tests.fixtures_browser",
]

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15")


def missing_service(what: str) -> None:
    """Skip on a laptop without the service; fail in CI, where it is required."""
    if IN_CI:
        pytest.fail(f"{what} is required in CI (CI=true) but is not available")
    pytest.skip(f"{what} is not available")


@pytest.fixture
def requires_postgres(db):
    """For tests of PostgreSQL behaviour; they run in the PostgreSQL pass of .ci/run."""
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("runs with DATABASE_URL=postgres://… (the PostgreSQL pass of .ci/run)")


@pytest.fixture
def redis_url():
    host, port = "127.0.0.1", 6379
    try:
        with socket.create_connection((host, port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            if not sock.recv(16).startswith(b"+PONG"):
                missing_service("Redis")
    except OSError:
        missing_service("Redis at 127.0.0.1:6379")
    return REDIS_URL


@pytest.fixture(autouse=True)
def _fresh_backends():
    """Backends are cached per process; tests get fresh ones and an empty locmem outbox."""
    from crm_sms.backends import locmem, reset_backends

    reset_backends()
    locmem.outbox.clear()
    yield
    reset_backends()


@pytest.fixture(autouse=True)
def _english_by_default(settings):
    """Tests read English texts (the msgids); the demo's LANGUAGE_CODE is ru and crm_sms ships a
    compiled ru catalog. A test that wants Russian asks for it (Accept-Language, override)."""
    from django.utils import translation

    settings.LANGUAGE_CODE = "en"
    translation.activate("en")
    yield
    translation.deactivate()
