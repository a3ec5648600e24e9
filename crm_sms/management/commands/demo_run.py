"""``manage.py demo_run "COMMAND ARGS" …``: run manage.py commands side by side until Ctrl-C
(``make demo``: the sandbox, a worker and the site), then stop them all cleanly.

Each command runs in a process group of its own, so a Ctrl-C reaches this supervisor only: it
passes SIGINT to each group (runserver's autoreloader and its child together), waits up to
``--grace`` seconds for them to finish, then sends SIGTERM, then SIGKILL. When one command ends
by itself (a port already taken…) the others are stopped too and its exit status is returned.
(A shell ``trap 'kill 0' INT TERM`` signals its own group, itself included, and re-enters its
trap until the shell crashes: the "Segmentation fault" ``make demo`` used to end with.)
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def manage_command() -> list[str]:
    """How to run another manage.py command the way this one was run."""
    script = os.path.abspath(sys.argv[0])
    if os.path.basename(script) == "manage.py":
        return [sys.executable, script]
    return [sys.executable, "-m", "django"]


class Supervisor:
    """Starts ``commands`` (argument lists of manage.py), waits for a stop signal or for one of
    them to end, then stops the rest."""

    def __init__(self, commands: list[list[str]], grace: float, log: Any) -> None:
        self.commands = commands
        self.grace = grace
        self.log = log
        self.processes: list[subprocess.Popen] = []
        self.stop = threading.Event()
        self.ended: subprocess.Popen | None = None

    def run(self) -> int:
        previous = {sig: signal.signal(sig, self._on_signal) for sig in STOP_SIGNALS}
        try:
            base = manage_command()
            for argv in self.commands:
                self.processes.append(
                    subprocess.Popen([*base, *argv], start_new_session=True)  # own group
                )
            while not self.stop.wait(0.2):
                self.ended = next((p for p in self.processes if p.poll() is not None), None)
                if self.ended is not None:
                    break
        finally:
            self.stop_all()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return self.ended.returncode if self.ended is not None else 0

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.stop.set()

    def stop_all(self) -> None:
        """SIGINT to every group still running, then SIGTERM, then SIGKILL, each after a wait."""
        waits = {signal.SIGINT: self.grace, signal.SIGTERM: 3.0, signal.SIGKILL: 3.0}
        for sig, wait in waits.items():
            alive = [p for p in self.processes if p.poll() is None]
            if not alive:
                return
            if sig != signal.SIGINT:
                names = ", ".join(str(p.args[len(manage_command())]) for p in alive)
                self.log.write(f"Still running: {names}; sending {sig.name}.")
            for process in alive:
                try:
                    os.killpg(process.pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and any(p.poll() is None for p in alive):
                time.sleep(0.05)


class Command(BaseCommand):
    help = (
        "Run manage.py commands side by side (each given as one argument, e.g. "
        '"runserver 127.0.0.1:8000") until Ctrl-C or SIGTERM, then stop them all and wait for '
        "them. make demo runs the sandbox, a worker and the site this way."
    )
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "commands", nargs="+", help='a manage.py command line, e.g. "sms_worker"'
        )
        parser.add_argument(
            "--grace", type=float, default=10.0, help="Seconds to wait after Ctrl-C (default 10)."
        )

    def handle(self, *args: Any, commands: list[str], grace: float, **options: Any) -> None:
        supervisor = Supervisor([shlex.split(c) for c in commands], grace, self.stderr)
        code = supervisor.run()
        if supervisor.ended is not None:
            name = " ".join(supervisor.ended.args[len(manage_command()) :])
            raise CommandError(
                f"“{name}” ended (exit status {code}); the others are stopped.",
                returncode=code or 1,
            )
        self.stdout.write("Stopped: " + ", ".join(c.split()[0] for c in commands) + ".")
