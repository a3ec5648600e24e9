"""The Send SMS form's checks of the text and of the sender, each on its own, so the page shows
both errors at once (not the sender's only after the text is fixed)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.core.exceptions import ValidationError

from .text import SMSTemplate


def check_text_and_sender(form: forms.Form, data: dict[str, Any]) -> None:
    """Add the text's template error to ``text`` and the provider's sender error to
    ``sender``, both when both are wrong."""
    from .outbox.recipients import resolve_provider, resolve_sender

    text = data.get("text")
    if text:
        variables = getattr(form, "template_variables", None)
        try:
            if variables:
                SMSTemplate(text, variables=tuple(variables))
            else:
                SMSTemplate(text)
        except ValidationError as exc:
            form.add_error("text", exc)
    provider = data.get("provider")
    if not provider:
        return
    try:
        _alias, backend = resolve_provider(provider)
        resolve_sender(backend, data.get("sender") or None)
    except ValidationError as exc:
        field = "provider" if exc.code == "provider" else "sender"
        form.add_error(field, exc)
