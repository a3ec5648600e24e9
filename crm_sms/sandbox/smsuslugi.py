"""SMS-Uslugi's XML API in the sandbox: ``POST /API/XML/send.php``, ``POST
/API/XML/report.php`` and ``POST /API/XML/balance.php`` (``<account>``: ``BALANCE``), the login
and password inside the XML body.

Answers as client code of the platform shows them: ``<data><code>1</code>…<smsid>…</smsid></data>``
for an accepted mailing (the client's ``smsid`` kept), ``<code>501</code>`` for wrong credentials,
500 without text, 510 without recipients, 504 for a sender that is not 1-11 Latin characters or
a number, 7xx for XML it cannot parse, and ``codes`` answered for given numbers (e.g. 517: "will
not be delivered"). report.php lists the numbers of a mailing by state (``enqueued`` until it is
reported, then ``delivered``/``notDelivered``); SMS-Uslugi is polled, so with ``callbacks`` on a
report after ``callback_delay`` seconds finds the final state by ``deliver_rate``, and tests set
``message["status"]`` instead.

Decisions where the real service is not documented here: throttling (``rate``, ``throttle_rate``)
is HTTP 429 with a text body; an smsid the sandbox does not know is reported as code 1 with an
empty ``<detail/>``; a repeated smsid is accepted again as another mailing (kept under
``<smsid>#2`` and reported together), as nothing says SMS-Uslugi refuses it.
"""

from __future__ import annotations

import hmac
import threading
import time
from typing import Any
from xml.etree import ElementTree

from .base import ProviderEmulator, RecordedRequest, Reply

SEND_PATH = "/API/XML/send.php"
REPORT_PATH = "/API/XML/report.php"
BALANCE_PATH = "/API/XML/balance.php"
BALANCE = "1520.75"
XML = "text/xml; charset=utf-8"
DESCRIPTIONS = {
    1: "Операция успешно завершена",
    500: "Недостаточно переданных параметров",
    501: "Неверная пара логин/пароль",
    504: "Недопустимое значение Адреса отправителя",
    510: "Отсутствуют получатели",
    517: "СМС не будет доставлена ни одному получателю",
    701: "Ошибка парсера XML документа",
}
DELIVERED, NOT_DELIVERED, ENQUEUED = "delivered", "notDelivered", "enqueued"


def parse_xml(body: bytes) -> ElementTree.Element:
    """The request's XML (ValueError when it is not XML, or declares a DTD or entities: the
    sandbox listens on a port anyone local can reach)."""
    if b"<!DOCTYPE" in body.upper() or b"<!ENTITY" in body.upper():
        raise ValueError("DTDs are not accepted")
    try:
        return ElementTree.fromstring(body)
    except ElementTree.ParseError as exc:
        raise ValueError(str(exc)) from exc


def xml_reply(code: int, **fields: Any) -> Reply:
    """``<data><code/><descr/>…fields</data>``; a list value repeats its element."""
    root = ElementTree.Element("data")
    ElementTree.SubElement(root, "code").text = str(code)
    ElementTree.SubElement(root, "descr").text = DESCRIPTIONS.get(code, "Ошибка")
    for name, value in fields.items():
        if isinstance(value, ElementTree.Element):
            root.append(value)
        else:
            ElementTree.SubElement(root, name).text = str(value)
    return Reply(200, ElementTree.tostring(root, encoding="utf-8", xml_declaration=True), XML)


def _sender_ok(sender: str) -> bool:
    digits = sender.removeprefix("+")
    if digits.isdigit() and len(digits) <= 15:
        return True
    return 1 <= len(sender) <= 11 and sender.isascii() and sender.isprintable()


class SmsUslugiEmulator(ProviderEmulator):
    """SMS-Uslugi: XML sends (credentials in the body), statuses by report.php."""

    name = "smsuslugi"
    title = "SMS-Uslugi"
    scheme = "smsuslugi"
    routes = {
        ("POST", SEND_PATH): "send",
        ("POST", REPORT_PATH): "report",
        ("POST", BALANCE_PATH): "balance",
    }
    delivered_status = DELIVERED
    failed_status = NOT_DELIVERED

    def __init__(self, sandbox):
        super().__init__(sandbox)
        self._lock = threading.Lock()
        self._mailings: dict[str, list[str]] = {}  # smsid -> keys in sandbox.accepted

    @property
    def server_header(self) -> str:
        return "SmsUslugiSandbox/1.0"

    def authenticate(self, request: RecordedRequest) -> Reply | None:
        """The ``<login>`` and ``<password>`` of the body; 501 when they are wrong, a 7xx
        code when the body is not XML (SMS-Uslugi answers HTTP 200 either way)."""
        try:
            root = parse_xml(request.body)
        except ValueError:
            return xml_reply(701)
        login = (root.findtext("login") or "").encode()
        password = (root.findtext("password") or "").encode()
        sandbox = self.sandbox
        ok = hmac.compare_digest(login, sandbox.login.encode())
        ok = hmac.compare_digest(password, sandbox.password.encode()) and ok
        return None if ok else xml_reply(501)

    def send(self, request: RecordedRequest) -> Reply:
        """One mailing: the client's smsid (or a new one), its ``<to>`` numbers."""
        sandbox = self.sandbox
        root = parse_xml(request.body)
        smsid = (root.findtext("smsid") or "").strip()
        if smsid:
            sandbox.count_attempt(smsid)
        failure = sandbox.inject_failure()
        if failure is not None:
            return failure
        text, sender = root.findtext("text") or "", root.findtext("source") or ""
        numbers = [(to.get("number") or "", (to.text or "").strip()) for to in root.findall("to")]
        if (root.findtext("action") or "send") != "send" or len(smsid) > 21:
            return xml_reply(500)
        if not numbers:
            return xml_reply(510)
        if not (text or all(own for _n, own in numbers)):
            return xml_reply(500)
        if sender and not _sender_ok(sender):
            return xml_reply(504)
        for number, _own in numbers:
            forced = sandbox.forced_code(number)
            if forced is not None:
                return xml_reply(forced)
        if sandbox.throttled():
            return Reply(429, "Too many requests", "text/plain; charset=utf-8")
        smsid = self._accept(smsid or f"sb{time.time_ns()}", numbers, text, sender)
        count = len(numbers)
        return xml_reply(
            1,
            smsid=smsid,
            datetime=time.strftime("%Y-%m-%d %H:%M:%S"),
            action="send",
            allRecivers=count,
            colSendAbonent=count,
            colNonSendAbonent=0,
            priceOfSending=f"{1.5 * count:.2f}",
            colsmsOfSending=count,
            price="1.50",
        )

    def _accept(self, smsid: str, numbers: list[tuple[str, str]], text: str, sender: str) -> str:
        key, attempt = smsid, 1
        mailing = {
            "smsid": smsid,
            "numbers": [n for n, _own in numbers],
            "text": text,
            "source": sender,
            "accepted_at": time.time(),
            "status": ENQUEUED,
        }
        while not self.sandbox.accept(key, mailing):
            attempt += 1
            key = f"{smsid}#{attempt}"
        with self._lock:
            self._mailings.setdefault(smsid, []).append(key)
        return smsid

    def report(self, request: RecordedRequest) -> Reply:
        """The numbers of the smsid's mailings by state (an unknown smsid: none)."""
        smsid = (parse_xml(request.body).findtext("smsid") or "").strip()
        if not smsid:
            return xml_reply(500)
        with self._lock:
            keys = list(self._mailings.get(smsid, []))
        with self.sandbox._lock:
            mailings = [self.sandbox.accepted[k] for k in keys if k in self.sandbox.accepted]
        detail = ElementTree.Element("detail")
        groups: dict[str, ElementTree.Element] = {}
        for mailing in mailings:
            self.settle(mailing, pending=mailing["status"] == ENQUEUED)
            group = groups.get(mailing["status"])
            if group is None:
                group = groups[mailing["status"]] = ElementTree.SubElement(
                    detail, mailing["status"]
                )
            for number in mailing["numbers"]:
                ElementTree.SubElement(group, "number").text = number
        return xml_reply(1, detail=detail)

    def balance(self, request: RecordedRequest) -> Reply:
        """The money on the account (the credentials were checked by ``authenticate``)."""
        return xml_reply(1, account=BALANCE)

    def delivery_report(self, message: dict[str, Any], delivered: bool) -> dict[str, Any]:
        """What report.php lists for ``message`` once final (SMS-Uslugi posts no reports)."""
        state = self.final_status(delivered)
        return {"smsid": message["smsid"], "detail": {state: message["numbers"]}}
