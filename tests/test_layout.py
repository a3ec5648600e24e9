"""The shape the architecture promises (docs/architecture.md), checked so it does not drift:
no module of crm_sms over 600 lines, no function over 80, no transport error handling in a
provider module (the HTTP base does it once), and every module the map names exists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "crm_sms"
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80
#: Modules that are the shared transport layer (allowed to catch transport exceptions).
TRANSPORT_MODULES = {"http.py", "__init__.py", "base.py", "options.py"}


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "migrations" not in p.parts)


def test_no_module_is_over_600_lines():
    long = {
        str(p.relative_to(ROOT)): n
        for p in _modules()
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}


def test_no_function_is_over_80_lines():
    long = {}
    for path in _modules():
        tree = _parse(path)
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long[f"{path.relative_to(ROOT)}:{node.lineno} {node.name}"] = length
    assert long == {}


def _provider_modules() -> list[Path]:
    backends = PACKAGE / "backends"
    return [
        p
        for p in sorted(backends.glob("*.py"))
        if p.name not in TRANSPORT_MODULES | {"console.py", "locmem.py", "dummy.py"}
    ]


@pytest.mark.parametrize("path", _provider_modules(), ids=lambda p: p.name)
def test_a_provider_module_has_no_transport_error_handling(path):
    """Connection errors, timeouts, TLS and 5xx are the HTTP base's job (backends/http.py)."""
    source = path.read_text(encoding="utf-8")
    caught = re.findall(r"except[^:\n]*\b(requests|urllib3|socket|ssl)\.", source)
    assert caught == [], f"{path.name} catches transport exceptions itself"
    assert ".post(" not in source.replace("self.post(", ""), f"{path.name} posts by itself"


def test_the_architecture_map_names_existing_files():
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    named = set(re.findall(r"`(crm_sms/[\w/]+(?:\.py)?/?)`", text))
    assert named, "docs/architecture.md names no files"
    missing = sorted(name for name in named if not (ROOT / name.rstrip("/")).exists())
    assert missing == []


def _parse(path: Path) -> ast.AST:
    """``ast.parse`` of ``path``; Python 3.11 can raise SystemError ("AST constructor recursion
    depth mismatch") when another thread is running, so a parse is tried again."""
    source = path.read_text(encoding="utf-8")
    for _attempt in range(3):
        try:
            return ast.parse(source)
        except SystemError:
            continue
    return ast.parse(source)
