"""``make demo``: Ctrl-C stops the sandbox, the worker and the site cleanly (no "Segmentation
fault", no KeyboardInterrupt traceback, each process's own shutdown, nothing left listening);
the sandbox's banner names the sender the demo uses; the site serves a favicon; the demo says
how to see the admin in English."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.fixtures_outbox import database_url

ROOT = Path(__file__).resolve().parent.parent
MAKEFILE = (ROOT / "Makefile").read_text()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def site_answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/admin/login/", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def demo_env(site: int, sandbox: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "DJANGO_ALLOW"))}
    env.update(
        DATABASE_URL=database_url(),
        DJANGO_SETTINGS_MODULE="config.settings",
        SMS_URL=f"megafon+http://demo:demo-password@127.0.0.1:{sandbox}/?sender=CRM-Demo",
        SMS_PUBLIC_URL=f"http://127.0.0.1:{site}",
        SMS_CALLBACK_TOKEN="demo-callback-token",
        PYTHONUNBUFFERED="1",
    )
    return env


def interrupt_when_up(
    argv: list[str], env: dict, site: int, sandbox: int, log: Path
) -> tuple[int, str]:
    """Start ``argv`` in a process group of its own (as a terminal runs a command), wait for the
    site and the sandbox, press "Ctrl-C" (SIGINT to the group), return (status, output)."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            deadline = time.monotonic() + 90
            while not (site_answers(site) and listening(sandbox)):
                assert process.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.3)
            time.sleep(1.0)  # the worker is up too
            os.killpg(process.pid, signal.SIGINT)
            status = process.wait(timeout=60)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
    return status, log.read_text(errors="replace")


def assert_clean(output: str, site: int, sandbox: int) -> None:
    assert "Segmentation fault" not in output
    assert "KeyboardInterrupt" not in output, output  # every process handled the Ctrl-C
    assert "Sandbox stopped" in output  # the sandbox ran its own shutdown
    assert "Done: sent" in output  # the worker finished its loop
    assert "Stopped: sms_sandbox, sms_worker, runserver." in output
    # The banner names the demo's sender.
    assert f"SMS_URL=megafon+http://demo:demo-password@127.0.0.1:{sandbox}/?sender=CRM-Demo" in (
        output
    )
    deadline = time.monotonic() + 5
    while (listening(site) or listening(sandbox)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not listening(site) and not listening(sandbox)  # nothing left behind


def test_the_makefile_runs_the_demo_through_the_supervisor():
    demo = MAKEFILE[MAKEFILE.index("\ndemo:") : MAKEFILE.index("\ntest:")]
    assert "kill 0" not in demo and "trap" not in demo
    assert "manage.py demo_run" in demo
    assert "--sender $(DEMO_SENDER)" in demo and "sender=$(DEMO_SENDER)" in MAKEFILE
    assert "Admin in English:" in demo


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_ctrl_c_stops_the_demo_processes_cleanly(tmp_path):
    site, sandbox = free_port(), free_port()
    argv = [sys.executable, "manage.py", "demo_run", "--grace", "20"]
    argv += [
        f"sms_sandbox --port {sandbox} --login demo --password demo-password --sender CRM-Demo",
        "sms_worker",
        f"runserver 127.0.0.1:{site}",
    ]
    status, output = interrupt_when_up(
        argv, demo_env(site, sandbox), site, sandbox, tmp_path / "demo.log"
    )
    assert status == 0, output
    assert_clean(output, site, sandbox)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_ctrl_c_stops_make_demo_cleanly(tmp_path):
    venv = Path(sys.executable).parent.parent
    if not (venv / "bin" / "python").exists():
        pytest.skip("runs from the project's virtualenv")
    site, sandbox = free_port(), free_port()
    argv = ["make", "--no-print-directory", "-o", f"{venv}/.installed", "demo"]
    argv += [f"VENV={venv}", f"DEMO_PORT={site}", f"SANDBOX_PORT={sandbox}"]
    status, output = interrupt_when_up(
        argv, demo_env(site, sandbox), site, sandbox, tmp_path / "make.log"
    )
    # make itself got the Ctrl-C too: it waits for the recipe, then ends as interrupted
    # (not killed by SIGTERM, not a crashed shell).
    assert status in (-signal.SIGINT, 128 + signal.SIGINT, 2), output
    assert "Admin in English:" in output and "Login: admin" in output
    assert_clean(output, site, sandbox)


@pytest.mark.django_db
def test_the_site_serves_a_favicon(client):
    response = client.get("/favicon.ico")
    assert response.status_code == 200
    assert response["Content-Type"] == "image/x-icon"
    assert b"".join(response.streaming_content)[:4] == b"\x00\x00\x01\x00"  # an ICO file
    page = client.get("/admin/login/").content.decode()
    assert '<link rel="icon" href="/favicon.ico"' in page
    assert 'rel="icon" href="/static/crm_sms/favicon.svg" type="image/svg+xml"' in page
