"""The conformance suite (tests/conformance.py) for MegaFon, SMS.RU and SMSC.ru, each against
its sandbox."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode

from crm_sms.backends.base import RetrySafety
from tests.conformance import ConformanceSuite


class TestMegafonConformance(ConformanceSuite):
    emulator = "megafon"
    refused_code = 1282  # the recipient is on MegaFon's blacklist
    throttled_code = "88"
    provider_error_code = "http_401"
    report_modes = ("callback",)


class TestSmsRuConformance(ConformanceSuite):
    emulator = "smsru"
    refused_code = 207  # no route to the number
    throttled_code = "220"
    provider_error_code = "200"  # wrong api_id
    report_modes = ("callback", "poll")

    def secrets(self, sandbox):
        return [self.login]  # the api_id; SMS.RU's URL has no password

    def forge(self, body, headers):
        fields = parse_qsl(body.decode("ascii"))
        forged = [(k, "0" * 64 if k == "hash" else v) for k, v in fields]
        return urlencode(forged).encode("ascii"), headers


class TestSmscConformance(ConformanceSuite):
    emulator = "smsc"
    refused_code = 22  # status 22: wrong number
    throttled_code = "9"
    provider_error_code = "2"  # wrong login or password
    report_modes = ("callback", "poll")

    def sent_count(self, sandbox):
        return len(sandbox.accepted) + len(sandbox.provider.duplicates)

    def forge(self, body, headers):
        fields = parse_qsl(body.decode("ascii"))
        forged = [(k, "0" * 32 if k == "md5" else v) for k, v in fields]
        return urlencode(forged).encode("ascii"), headers


class TestSmscBatchConformance(TestSmscConformance):
    """SMSC with many phones per request: the batch test runs; no lookup (retry_safety NONE)."""

    def sms_url(self, sandbox):
        return sandbox.sms_url(self.sender) + "&batch_size=50"

    def test_batch_mode_declares_no_lookup(self, backend):
        assert backend.max_batch_size == 50
        assert backend.retry_safety is RetrySafety.NONE
