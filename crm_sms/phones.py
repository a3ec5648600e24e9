"""Phone numbers as people type them, normalized to E.164 with the ``phonenumbers`` library."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

import phonenumbers
from django.core.exceptions import ValidationError
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from . import conf

# Excel turns a phone column into numbers: "79001234212.0" or "7.9001234212E+10".
_EXCEL_NUMBER = re.compile(r"^\d+\.0+$|^\d(\.\d+)?[eE]\+?\d+$")

_REASONS = {
    phonenumbers.ValidationResult.TOO_SHORT: gettext_lazy("it is too short"),
    phonenumbers.ValidationResult.TOO_LONG: gettext_lazy("it is too long"),
    phonenumbers.ValidationResult.INVALID_COUNTRY_CODE: gettext_lazy("the country code is unknown"),
    phonenumbers.ValidationResult.INVALID_LENGTH: gettext_lazy("it has the wrong number of digits"),
    # A local number without its area code.
    phonenumbers.ValidationResult.IS_POSSIBLE_LOCAL_ONLY: gettext_lazy("it is too short"),
}


def _excel_number_to_digits(value: str) -> str:
    try:
        return str(int(Decimal(value)))
    except (InvalidOperation, ValueError):
        return value


def normalize_phone(value: object, region: str | None = None) -> str:
    """Return ``value`` as an E.164 string (``+79001234212``) or raise ValidationError saying why.

    Accepts "8 (900) 123-42-12", "+7 900 123 42 12", "9001234212", "8-900-123-42-12", Excel's
    79001234212.0; numbers without a country code are read in ``region``
    (``CRM_SMS["DEFAULT_REGION"]``, "RU" by default).
    """
    region = region or conf.get_setting("DEFAULT_REGION")
    if isinstance(value, float | int | Decimal) and not isinstance(value, bool):
        text = _excel_number_to_digits(str(value))
    else:
        text = str(value or "").strip().replace("\u00a0", " ")
        if _EXCEL_NUMBER.match(text):
            text = _excel_number_to_digits(text)
    if not text:
        raise ValidationError(_("The phone number is empty."), code="empty")
    if not re.search(r"\d", text):
        raise ValidationError(
            _("“%(value)s” is not a phone number: it has no digits.") % {"value": text},
            code="invalid",
        )
    if re.search(r"[A-Za-zА-Яа-я]", re.sub(r"(?i)\b(доб|ext|x)\b.*$", "", text)):
        raise ValidationError(
            _("“%(value)s” is not a phone number: it contains letters.") % {"value": text},
            code="invalid",
        )
    # A bare 11-digit Russian number without "+" ("79001234212") reads right in region RU;
    # elsewhere digits starting with the country code need the "+" to be read as international.
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException as exc:
        raise ValidationError(
            _("“%(value)s” is not a phone number: %(reason)s")
            % {"value": text, "reason": _parse_error_text(exc)},
            code="invalid",
        ) from exc
    possible = phonenumbers.is_possible_number_with_reason(number)
    if possible != phonenumbers.ValidationResult.IS_POSSIBLE:
        raise ValidationError(
            _("“%(value)s” is not a valid phone number: %(reason)s.")
            % {"value": text, "reason": _REASONS.get(possible, _("it is malformed"))},
            code="invalid",
        )
    if not phonenumbers.is_valid_number(number):
        # The length rules of the region's mobile numbers explain most mistakes.
        length = phonenumbers.is_possible_number_for_type_with_reason(
            number, phonenumbers.PhoneNumberType.MOBILE
        )
        if length in (
            phonenumbers.ValidationResult.TOO_SHORT,
            phonenumbers.ValidationResult.TOO_LONG,
        ):
            raise ValidationError(
                _("“%(value)s” is not a valid phone number: %(reason)s.")
                % {"value": text, "reason": _REASONS[length]},
                code="invalid",
            )
        raise ValidationError(
            _("“%(value)s” is not a valid phone number: no such number range in %(region)s.")
            % {
                "value": text,
                "region": phonenumbers.region_code_for_number(number) or f"+{number.country_code}",
            },
            code="invalid",
        )
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _parse_error_text(exc: phonenumbers.NumberParseException) -> str:
    return {
        phonenumbers.NumberParseException.INVALID_COUNTRY_CODE: _("the country code is unknown"),
        phonenumbers.NumberParseException.NOT_A_NUMBER: _("it does not look like a number"),
        phonenumbers.NumberParseException.TOO_SHORT_AFTER_IDD: _("it is too short"),
        phonenumbers.NumberParseException.TOO_SHORT_NSN: _("it is too short"),
        phonenumbers.NumberParseException.TOO_LONG: _("it is too long"),
    }.get(exc.error_type, str(exc))


def is_valid_phone(value: object, region: str | None = None) -> bool:
    try:
        normalize_phone(value, region)
    except ValidationError:
        return False
    return True


def phone_digits(e164: str) -> str:
    """``+79001234212`` -> ``79001234212`` (the form MegaFon and most providers take)."""
    return e164.lstrip("+")


def international_digits(phone: str, min_digits: int = 11) -> str:
    """The digits of an E.164 number, the form most providers take (``+79001234212`` ->
    ``79001234212``). Raises ValidationError (code ``invalid_phone``) unless they are
    ``min_digits`` to 15 ASCII digits: 11 covers Russian numbers with their country code."""
    digits = phone.removeprefix("+")
    if not (digits.isascii() and digits.isdigit() and min_digits <= len(digits) <= 15):
        raise ValidationError(
            _("The number %(to)s is not in international format (+79001234212).") % {"to": phone},
            code="invalid_phone",
        )
    return digits
