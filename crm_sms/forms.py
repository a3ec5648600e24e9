"""Admin forms: the contact import and the "Send SMS…" page."""

from __future__ import annotations

import hashlib
import re
from datetime import timedelta
from typing import Any

from django import forms
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from . import conf
from .backends import provider_choices
from .models import CampaignKind
from .quiet_hours import default_window, parse_window
from .send_checks import check_text_and_sender

AUTO = ""


class ContactImportForm(forms.Form):
    """The upload step of the contact import; every option defaults to "detect"."""

    file = forms.FileField(
        label=_("File"),
        help_text=_(
            "CSV (UTF-8 or Windows-1251; “,”, “;” or tab) or Excel .xlsx. The first line holds "
            "the column titles: Last name, First name, Middle name, Phone, Email, Groups, "
            "Notes, External ID (in Russian or English)."
        ),
    )
    format = forms.ChoiceField(
        label=_("Format"),
        required=False,
        choices=[(AUTO, _("Detect")), ("csv", "CSV"), ("xlsx", "Excel (.xlsx)")],
    )
    encoding = forms.ChoiceField(
        label=_("Encoding"),
        required=False,
        choices=[(AUTO, _("Detect")), ("utf-8", "UTF-8"), ("cp1251", "Windows-1251")],
    )
    delimiter = forms.ChoiceField(
        label=_("Delimiter"),
        required=False,
        choices=[(AUTO, _("Detect")), (";", ";"), (",", ","), ("tab", _("tab"))],
    )
    group = forms.CharField(
        label=_("Add to group"),
        required=False,
        max_length=200,
        help_text=_("Every imported contact joins this group (created when missing)."),
    )


class ContactImportConfirmForm(forms.Form):
    """The confirm step: the uploaded file kept on the server, and the options it was read with."""

    token = forms.RegexField(regex=r"^[A-Za-z0-9_-]{8,64}$", widget=forms.HiddenInput)
    filename = forms.CharField(required=False, widget=forms.HiddenInput)
    format = forms.CharField(required=False, widget=forms.HiddenInput)
    encoding = forms.CharField(required=False, widget=forms.HiddenInput)
    delimiter = forms.CharField(required=False, widget=forms.HiddenInput, strip=False)
    group = forms.CharField(required=False, widget=forms.HiddenInput)


class SendSMSForm(forms.Form):
    """The "Send SMS…" page: text (a template), sender, provider and an optional send time."""

    name = forms.CharField(
        label=_("Campaign name"),
        required=False,
        max_length=200,
        help_text=_("Optional; by default the date and time."),
    )
    text = forms.CharField(
        label=_("Text"),
        widget=forms.Textarea(attrs={"rows": 5, "cols": 60, "class": "vLargeTextField"}),
        help_text=_("You can use {{ first_name }}, {{ last_name }}, {{ middle_name }}."),
    )
    sender = forms.CharField(
        label=_("Sender"),
        required=False,
        max_length=20,
        help_text=_("The sender name registered with the provider."),
    )
    provider = forms.ChoiceField(label=_("Provider"))
    scheduled_at = forms.DateTimeField(
        label=_("Send at"),
        required=False,
        input_formats=["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%d.%m.%Y %H:%M"],
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
        help_text=_("Leave empty to send now."),
    )
    kind = forms.ChoiceField(
        label=_("Kind"),
        required=False,
        choices=CampaignKind.choices,
        initial=CampaignKind.SERVICE,
        widget=forms.RadioSelect,
        help_text=_(
            "Advertising goes only to contacts who consented to it (38-FZ art. 18) and gets "
            "the unsubscribe phrase."
        ),
    )
    window_start = forms.TimeField(
        label=_("Send from"),
        required=False,
        widget=forms.TimeInput(attrs={"type": "time"}, format="%H:%M"),
    )
    window_end = forms.TimeField(
        label=_("Send until"),
        required=False,
        widget=forms.TimeInput(attrs={"type": "time"}, format="%H:%M"),
        help_text=_(
            "In each recipient's local time; messages outside it wait for the window to "
            "open. Leave both empty to send at any hour."
        ),
    )
    translit = forms.BooleanField(
        label=_("Transliterate"),
        required=False,
        help_text=_("Write Cyrillic in Latin letters: fewer SMS parts."),
    )
    smart_encoding = forms.BooleanField(
        label=_("Replace look-alike characters"),
        required=False,
        initial=True,
        help_text=_("« » – … and the like become GSM-7 characters when only they make it UCS-2."),
    )
    # The text the user saw previewed; "Send" with another text shows the preview again.
    previewed = forms.CharField(required=False, widget=forms.HiddenInput, strip=False)

    def __init__(self, *args: Any, variables: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["provider"].choices = provider_choices()
        self.fields["provider"].initial = conf.default_provider()
        self.template_variables = list(variables or [])
        if variables:
            names = ", ".join(f"{{{{ {name} }}}}" for name in variables)
            self.fields["text"].help_text = _("You can use %(names)s.") % {"names": names}
        self.fields["scheduled_at"].help_text = _("%(zone)s time. Leave empty to send now.") % {
            "zone": timezone.get_current_timezone_name()
        }
        window = default_window()
        if window is not None:
            self.fields["window_start"].initial = window.start
            self.fields["window_end"].initial = window.end

    def clean_text(self) -> str:
        # Browsers send textarea line breaks as CRLF; the counter on the page (and the user)
        # count one character per line break.
        return re.sub(r"\r\n?", "\n", self.cleaned_data["text"])

    def clean_scheduled_at(self) -> Any:
        when = self.cleaned_data.get("scheduled_at")
        if when is not None and when < timezone.now() - timedelta(minutes=1):
            raise forms.ValidationError(
                _("This time has passed: give a time in the future, or leave it empty."),
                code="scheduled_in_past",
            )
        return when

    def clean_kind(self) -> str:
        return self.cleaned_data.get("kind") or CampaignKind.SERVICE

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        check_text_and_sender(self, data)
        start, end = data.get("window_start"), data.get("window_end")
        if (start is None) != (end is None):
            self.add_error(
                "window_end" if end is None else "window_start",
                _("Give both times of the send window, or neither."),
            )
        elif start is not None:
            try:
                parse_window((start, end))
            except forms.ValidationError as exc:
                self.add_error("window_end", exc)
        return data

    def window(self) -> tuple[Any, Any] | None:
        """The send window as ``send_campaign(window=...)`` takes it: (start, end) or None."""
        start, end = self.cleaned_data.get("window_start"), self.cleaned_data.get("window_end")
        return None if start is None or end is None else (start, end)

    def campaign_options(self) -> dict[str, Any]:
        """The keyword arguments of preview_campaign and send_campaign the form chose."""
        data = self.cleaned_data
        return {
            "kind": data.get("kind") or CampaignKind.SERVICE,
            "window": self.window(),
            "translit": bool(data.get("translit")),
            "smart_encoding": bool(data.get("smart_encoding")),
            "scheduled_at": data.get("scheduled_at"),
        }

    def preview_key(self) -> str:
        """A digest of what a preview was made of; "Send" must carry the same one."""
        data = self.cleaned_data
        parts = [data.get("text", ""), data.get("sender", ""), data.get("provider", "")]
        parts.append(str(data.get("scheduled_at") or ""))
        options = self.campaign_options()
        parts += [options["kind"], str(options["window"]), str(options["translit"])]
        parts.append(str(options["smart_encoding"]))
        return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:32]
