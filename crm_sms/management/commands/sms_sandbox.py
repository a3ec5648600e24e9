"""``manage.py sms_sandbox``: run a provider emulator (``crm_sms.sandbox``, MegaFon unless
``--provider`` names another; with ``--smpp PORT`` also the SMPP SMSC) until Ctrl-C; or, with
``--post-inbound PHONE TEXT``, post one incoming SMS to ``--inbound-url`` as Twilio or SMSC
would, and exit."""

from __future__ import annotations

import signal
import threading

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from crm_sms.phones import normalize_phone
from crm_sms.sandbox import EMULATORS, SandboxServer
from crm_sms.sandbox.smpp import add_smpp_arguments, run_smpp_from_options


def _share(value: str) -> float:
    number = float(value)
    if not 0.0 <= number <= 1.0:
        raise ValueError(value)
    return number


class Command(BaseCommand):
    help = (
        "Run a local emulator of an SMS provider's API (by default MegaFon's A2P HTTPS API: "
        "Basic auth, 20101/20102/88 answers, delivery callbacks) and print the SMS_URL that "
        "points at it. Stops on Ctrl-C/SIGTERM."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--provider",
            choices=sorted(EMULATORS),
            default="megafon",
            help="Which provider's API to emulate (default: megafon).",
        )
        parser.add_argument("--host", default="127.0.0.1", help="Address to listen on.")
        parser.add_argument("--port", type=int, default=8999, help="Port (0: any free one).")
        parser.add_argument("--login", default="test", help="The login it accepts.")
        parser.add_argument("--password", default="test", help="The password it accepts.")
        parser.add_argument("--sender", default="Test", help="Sender put in the printed SMS_URL.")
        parser.add_argument("--latency-ms", type=float, default=0, help="Delay of every answer.")
        parser.add_argument("--fail-rate", type=_share, default=0.0, help="Share answered 503.")
        parser.add_argument(
            "--timeout-rate",
            type=_share,
            default=0.0,
            help="Share answered after --timeout-s.",
        )
        parser.add_argument("--timeout-s", type=float, default=5.0)
        parser.add_argument(
            "--throttle-rate",
            type=_share,
            default=0.0,
            help="Share of messages refused as throttled, with the provider's own answer for "
            "too many messages.",
        )
        parser.add_argument(
            "--deliver-rate",
            type=_share,
            default=1.0,
            help="Share of accepted messages reported delivered (the rest delivery_failed).",
        )
        parser.add_argument(
            "--rate",
            type=float,
            default=None,
            help="Messages per second; over it, the provider's throttling answer.",
        )
        parser.add_argument(
            "--callback-delay", type=float, default=0.0, help="Seconds before a delivery report."
        )
        parser.add_argument("--no-callbacks", action="store_true", help="Post no delivery reports.")
        parser.add_argument(
            "--inbound-url",
            default="",
            help="Where incoming SMS go (Twilio: the number's messaging URL; SMSC: the "
            "account's callback URL), e.g. http://127.0.0.1:8000/sms/callback/smsc/TOKEN/inbound/",
        )
        parser.add_argument(
            "--post-inbound",
            nargs=2,
            metavar=("PHONE", "TEXT"),
            help="Post one incoming SMS from PHONE to --inbound-url (twilio, smsc), then exit.",
        )
        add_smpp_arguments(parser)

    def handle(self, *args, **options) -> None:
        if options["post_inbound"]:
            self.post_inbound(options)
            return
        sandbox = self.start_http(options)
        self.stdout.write(
            f"{sandbox.provider.title} sandbox listening on {sandbox.base_url} "
            f"({sandbox.provider.api})\n"
            f"SMS_URL={sandbox.sms_url(options['sender'])}"
        )
        try:
            smpp = run_smpp_from_options(options, self.stdout)
        except CommandError:
            sandbox.stop()
            raise
        self.stdout.write("Quit with Ctrl-C.")
        self.stdout.flush()
        stop = threading.Event()
        previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
        try:
            while not stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
        finally:
            signal.signal(signal.SIGTERM, previous)
            sandbox.stop()
            if smpp is not None:
                smpp.stop()
        self.stdout.write(
            f"Sandbox stopped: {len(sandbox.requests)} requests, {len(sandbox.accepted)} "
            f"messages accepted, {len(sandbox.callbacks_sent)} delivery reports posted."
        )

    def post_inbound(self, options: dict) -> None:
        """Post the ``--post-inbound`` SMS, signed with ``--password`` (no server runs)."""
        if not options["inbound_url"]:
            raise CommandError("--post-inbound needs --inbound-url (the site's inbound URL).")
        sandbox = SandboxServer(
            provider=options["provider"], login=options["login"], password=options["password"]
        )
        phone, text = options["post_inbound"]
        try:
            phone = normalize_phone(phone)  # providers post international numbers
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from exc
        try:
            response = sandbox.post_inbound(phone, text, url=options["inbound_url"])
        except NotImplementedError as exc:
            raise CommandError(str(exc)) from exc
        except OSError as exc:
            raise CommandError(f"Cannot post to {options['inbound_url']}: {exc}") from exc
        self.stdout.write(f"Posted; the site answered HTTP {response.status_code}.")
        if not response.ok:
            raise CommandError(response.text[:200])

    def start_http(self, options: dict) -> SandboxServer:
        """The HTTP sandbox the options describe, started."""
        sandbox = SandboxServer(
            provider=options["provider"],
            host=options["host"],
            port=options["port"],
            login=options["login"],
            password=options["password"],
            latency_ms=options["latency_ms"],
            fail_rate=options["fail_rate"],
            timeout_rate=options["timeout_rate"],
            timeout_s=options["timeout_s"],
            throttle_rate=options["throttle_rate"],
            rate=options["rate"],
            deliver_rate=options["deliver_rate"],
            callback_delay=options["callback_delay"],
            callbacks=not options["no_callbacks"],
        )
        if options["inbound_url"] and hasattr(sandbox.provider, "inbound_url"):
            sandbox.provider.inbound_url = options["inbound_url"]
        try:
            return sandbox.start()
        except OSError as exc:
            raise CommandError(
                f"Cannot listen on {options['host']}:{options['port']}: {exc.strerror or exc}. "
                "Is another sandbox running? Pick another --port."
            ) from exc
