"""``sms_sandbox --smpp PORT``: the options of the SMPP sandbox and starting it from them.

The command (``crm_sms/management/commands/sms_sandbox.py``) calls ``add_smpp_arguments`` in
its ``add_arguments`` and ``run_smpp_from_options`` in ``handle``; it stops the returned
sandbox when it exits.
"""

from __future__ import annotations

import argparse
from typing import Any, TextIO

from django.core.management.base import CommandError

from .server import SMPPSandbox


def _share(value: str) -> float:
    number = float(value)
    if not 0.0 <= number <= 1.0:
        raise argparse.ArgumentTypeError(f"{value} is not a share from 0 to 1")
    return number


def add_smpp_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``--smpp*`` options."""
    group = parser.add_argument_group("SMPP sandbox (an SMSC for smpp:// providers)")
    group.add_argument(
        "--smpp", type=int, metavar="PORT", default=None, help="Also run an SMPP SMSC on PORT."
    )
    group.add_argument("--smpp-host", default="127.0.0.1", help="Its address.")
    group.add_argument("--smpp-system-id", default="test", help="The system_id it accepts.")
    group.add_argument("--smpp-password", default="test", help="The password it accepts.")
    group.add_argument("--smpp-sender", default="Test", help="Sender in the printed SMS_URL.")
    group.add_argument("--smpp-latency-ms", type=float, default=0, help="Delay of each answer.")
    group.add_argument(
        "--smpp-throttle-rate", type=_share, default=0.0, help="Share answered ESME_RTHROTTLED."
    )
    group.add_argument(
        "--smpp-rate", type=float, default=None, help="submit_sm per second; over it, throttled."
    )
    group.add_argument(
        "--smpp-error-rate", type=_share, default=0.0, help="Share answered ESME_RSUBMITFAIL."
    )
    group.add_argument(
        "--smpp-drop-rate",
        type=_share,
        default=0.0,
        help="Share of submit_sm accepted and then the connection dropped without an answer.",
    )
    group.add_argument(
        "--smpp-receipt-delay", type=float, default=0.0, help="Seconds before a receipt."
    )
    group.add_argument(
        "--smpp-deliver-rate",
        type=_share,
        default=1.0,
        help="Share of receipts that say DELIVRD (the rest UNDELIV).",
    )


def run_smpp_from_options(
    options: dict[str, Any], stdout: TextIO | None = None
) -> SMPPSandbox | None:
    """Start the SMPP sandbox the options describe (None without ``--smpp``) and print its
    address and SMS_URL to ``stdout``. The caller stops it. Raises CommandError when the port
    is taken."""
    if options.get("smpp") is None:
        return None
    sandbox = SMPPSandbox(
        host=options["smpp_host"],
        port=options["smpp"],
        system_id=options["smpp_system_id"],
        password=options["smpp_password"],
        latency_ms=options["smpp_latency_ms"],
        throttle_rate=options["smpp_throttle_rate"],
        rate=options["smpp_rate"],
        error_rate=options["smpp_error_rate"],
        drop_rate=options["smpp_drop_rate"],
        receipt_delay=options["smpp_receipt_delay"],
        deliver_rate=options["smpp_deliver_rate"],
    )
    try:
        sandbox.start()
    except OSError as exc:
        raise CommandError(
            f"Cannot listen on {options['smpp_host']}:{options['smpp']} for SMPP: "
            f"{exc.strerror or exc}. Pick another --smpp port."
        ) from exc
    if stdout is not None:
        stdout.write(
            f"SMPP sandbox listening on {sandbox.host}:{sandbox.port}\n"
            f"SMS_URL={sandbox.url(options['smpp_sender'])}\n"
        )
    return sandbox
