import pytest
from django.core.exceptions import ValidationError

from crm_sms.text import GSM7, UCS2, SMSTemplate, count_segments, render_template, sms_info


@pytest.mark.parametrize(
    ("text", "encoding", "units", "segments"),
    [
        ("", GSM7, 0, 0),
        ("a", GSM7, 1, 1),
        ("a" * 160, GSM7, 160, 1),
        ("a" * 161, GSM7, 161, 2),
        ("a" * 306, GSM7, 306, 2),  # 2 × 153
        ("a" * 307, GSM7, 307, 3),
        ("я" * 70, UCS2, 70, 1),
        ("я" * 71, UCS2, 71, 2),
        ("я" * 134, UCS2, 134, 2),  # 2 × 67
        ("я" * 135, UCS2, 135, 3),
        ("€" * 80, GSM7, 160, 1),  # extension characters count two
        ("€" * 81, GSM7, 162, 2),
        ("a" * 159 + "€", GSM7, 161, 2),
        ("Hello`", UCS2, 6, 1),  # the backtick is not GSM 03.38
        ("😀" * 35, UCS2, 70, 1),  # outside the BMP: two UCS-2 units each
        ("😀" * 36, UCS2, 72, 2),
        ("Привет, мир!", UCS2, 12, 1),
        ("{}[]~^|\\", GSM7, 16, 1),
        ("@£$¥èéùìòÇØøÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ¤¡ÄÖÑÜ§¿äöñüà", GSM7, 42, 1),
    ],
)
def test_encoding_units_and_parts(text, encoding, units, segments):
    info = sms_info(text)
    assert (info.encoding, info.units, info.segments) == (encoding, units, segments)
    assert info.characters == len(text)


def test_extension_character_is_not_split_at_a_part_edge():
    # 152 plain characters + '€' (2 units) = 154: the pair moves whole into part two.
    text = "a" * 152 + "€" + "a" * 10
    assert sms_info(text).units == 164
    assert count_segments(text) == 2
    # With 305 units the pair would straddle parts 2 and 3: it needs a third part.
    text = "a" * 152 + "€" + "a" * 151 + "€"
    assert sms_info(text).units == 307
    assert count_segments(text) == 3
    text = "a" * 153 + "a" * 151 + "€"
    assert sms_info(text).units == 306
    assert count_segments(text) == 2


def test_surrogate_pair_is_not_split_at_a_part_edge():
    text = "я" * 66 + "😀" + "я" * 10  # 66 + 2 + 10 = 78 units; the emoji moves to part two
    assert sms_info(text).units == 78
    assert count_segments(text) == 2
    text = "я" * 66 + "😀" + "я" * 65 + "😀"  # 135 units; each emoji would straddle
    assert count_segments(text) == 3


def test_per_segment_capacity_is_reported():
    assert sms_info("a" * 160).per_segment == 160
    assert sms_info("a" * 161).per_segment == 153
    assert sms_info("я").per_segment == 70
    assert sms_info("я" * 71).per_segment == 67


class Contact:
    first_name = "Иван"
    last_name = "Петров"
    middle_name = "Сергеевич"
    phone = "+79001234212"


def test_template_renders_contact_fields():
    template = SMSTemplate("Здравствуйте, {{ first_name }} {{ middle_name }}! {{ phone }}")
    assert template.render_contact(Contact()) == "Здравствуйте, Иван Сергеевич! +79001234212"


def test_template_is_plain_text_not_html_escaped():
    class Shop(Contact):
        first_name = "Tom & <Jerry>"

    assert SMSTemplate("{{ first_name }}").render_contact(Shop()) == "Tom & <Jerry>"


def test_filters_and_tags_work():
    text = SMSTemplate("{% if first_name %}{{ first_name|upper }}{% else %}Клиент{% endif %}")
    assert text.render_contact(Contact()) == "ИВАН"
    assert text.render({"first_name": "", "last_name": "", "middle_name": "", "phone": ""}) == (
        "Клиент"
    )


def test_static_text_is_returned_as_is():
    assert SMSTemplate("Скидка 10% до {воскресенья}").render_contact(Contact()) == (
        "Скидка 10% до {воскресенья}"
    )


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ("Hello {{ first_name ", "error"),
        ("{% if first_name %}no end", "error"),
        ("{{ first_name|nosuchfilter }}", "error"),
        ("{% load nosuchlib %}", "error"),
        ("Hello {{ firstname }}", "{{ firstname }}"),
        ("Hello {{ company.name }}", "{{ company }}"),
        ("", "empty"),
        ("   ", "empty"),
    ],
)
def test_template_errors_are_reported_before_sending(source, fragment):
    with pytest.raises(ValidationError) as excinfo:
        SMSTemplate(source)
    assert fragment in " ".join(excinfo.value.messages)


def test_unknown_name_inside_a_tag_is_caught_at_render():
    template = SMSTemplate("{% if vip %}VIP{% endif %}{{ first_name }}")
    # Django's {% if %} treats unknown names as False, so this one renders; a variable node
    # with an unknown name is the case that would otherwise render blank.
    assert template.render_contact(Contact()) == "Иван"


def test_extra_variables_can_be_allowed():
    template = SMSTemplate("{{ first_name }}: {{ order }}", variables=("first_name", "order"))
    assert template.render({"first_name": "Ann", "order": "A-1"}) == "Ann: A-1"
    assert render_template("{{ order }}", {"order": 5}) == "5"
