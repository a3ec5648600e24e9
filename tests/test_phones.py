import pytest
from django.core.exceptions import ValidationError

from crm_sms.phones import international_digits, is_valid_phone, normalize_phone, phone_digits

VALID = [
    ("8 (900) 123-42-12", "+79001234212"),
    ("+7 900 123 42 12", "+79001234212"),
    ("9001234212", "+79001234212"),
    ("8-900-123-42-12", "+79001234212"),
    ("79001234212.0", "+79001234212"),
    ("7.9001234212E+10", "+79001234212"),
    ("79001234212", "+79001234212"),
    ("89001234212", "+79001234212"),
    ("+79001234212", "+79001234212"),
    ("  +7 (900) 123-42-12  ", "+79001234212"),
    ("+7\u00a0900\u00a0123\u00a042\u00a012", "+79001234212"),
    ("8 900 1234212", "+79001234212"),
    ("(900)1234212", "+79001234212"),
    ("8 (495) 123-45-67", "+74951234567"),
    ("+7 (812) 123-45-67", "+78121234567"),
    ("+380 50 123 4567", "+380501234567"),
    ("+375 29 123-45-67", "+375291234567"),
    ("+1 202 555 0143", "+12025550143"),
    ("+44 20 7946 0958", "+442079460958"),
    ("+49 30 901820", "+4930901820"),
    ("+998 90 123 45 67", "+998901234567"),
    ("+7 701 123 4567", "+77011234567"),  # Kazakhstan shares +7
    ("8 (900) 123-42-12 доб. 5", "+79001234212"),
]

INVALID = [
    ("", "empty"),
    ("   ", "empty"),
    (None, "empty"),
    ("abc", "no digits"),
    ("12345", "too short"),
    ("8 900 123", "too short"),
    ("+7 900 123 42 12 34 56", "too long"),
    ("0501234567", "no such number range"),
    ("+999 123 456 789", "country code"),
    ("9OO123421two", "letters"),
    ("телефон 9001234212", "letters"),
    ("+7 000 000 00 00", "no such number range"),
]


@pytest.mark.parametrize(("raw", "expected"), VALID)
def test_valid_phones_normalize_to_e164(raw, expected):
    assert normalize_phone(raw) == expected
    assert is_valid_phone(raw)


@pytest.mark.parametrize(("raw", "reason"), INVALID)
def test_invalid_phones_say_what_is_wrong(raw, reason):
    with pytest.raises(ValidationError) as excinfo:
        normalize_phone(raw)
    message = " ".join(excinfo.value.messages)
    assert reason in message, message
    assert not is_valid_phone(raw)


def test_excel_numbers_as_python_numbers():
    assert normalize_phone(79001234212) == "+79001234212"
    assert normalize_phone(79001234212.0) == "+79001234212"


def test_region_decides_numbers_without_country_code(settings):
    assert normalize_phone("050 123 4567", region="UA") == "+380501234567"
    settings.CRM_SMS = {**settings.CRM_SMS, "DEFAULT_REGION": "UA"}
    assert normalize_phone("050 123 4567") == "+380501234567"


def test_phone_digits():
    assert phone_digits("+79001234212") == "79001234212"


@pytest.mark.parametrize(
    "phone, min_digits, digits",
    [
        ("+79001234212", 11, "79001234212"),
        ("79001234212", 11, "79001234212"),
        ("+123456789012345", 11, "123456789012345"),
        ("+4930901", 7, "4930901"),
    ],
)
def test_international_digits_are_what_providers_take(phone, min_digits, digits):
    assert international_digits(phone, min_digits=min_digits) == digits


@pytest.mark.parametrize(
    "phone, min_digits",
    [
        ("+9001234212", 11),  # ten digits: no country code
        ("+1234567890123456", 11),  # sixteen
        ("++79001234212", 11),
        ("+7 900 123 42 12", 11),
        ("+７９００１２３４２１２", 11),  # full-width digits are digits, but not ASCII
        ("+490123", 7),
    ],
)
def test_international_digits_refuse_other_forms(phone, min_digits):
    with pytest.raises(ValidationError) as excinfo:
        international_digits(phone, min_digits=min_digits)
    assert excinfo.value.code == "invalid_phone"
    assert phone in excinfo.value.messages[0]
    assert "international format" in excinfo.value.messages[0]


def test_table_is_big_enough():
    assert len(VALID) + len(INVALID) >= 30
