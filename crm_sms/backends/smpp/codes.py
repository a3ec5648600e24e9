"""SMPP 3.4 ``command_status`` values (ESME_R*): how the backend handles each, and what it
means to a person, in English and Russian.

The texts live here in both languages (not in the gettext catalog) because an operator reads
them in the admin next to the raw code; ``message()`` picks the active language. Codes the
table does not know (vendor-specific 0x400-0x4FF and others) are permanent for the message.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.utils import translation

from ..base import SendStatus

S = SendStatus


def pick(en: str, ru: str) -> str:
    """``ru`` when the active language is Russian, else ``en``."""
    return ru if (translation.get_language() or "").startswith("ru") else en


@dataclass(frozen=True)
class ESMEStatus:
    code: int
    name: str
    handling: SendStatus  # what a submit_sm answered with this code means for the message
    en: str
    ru: str

    def message(self) -> str:
        return pick(self.en, self.ru)


_ROWS: list[tuple[int, str, SendStatus, str, str]] = [
    (0x00, "ESME_ROK", S.ACCEPTED, "Accepted.", "Принято."),
    (0x01, "ESME_RINVMSGLEN", S.REJECTED, "Invalid message length.", "Неверная длина сообщения."),
    (0x02, "ESME_RINVCMDLEN", S.REJECTED, "Invalid command length.", "Неверная длина команды."),
    (0x03, "ESME_RINVCMDID", S.REJECTED, "Invalid command id.", "Неверный идентификатор команды."),
    (
        0x04,
        "ESME_RINVBNDSTS",
        S.RETRY,
        "The SMSC does not consider the connection bound; it will be re-established.",
        "SMSC считает соединение не авторизованным; оно будет установлено заново.",
    ),
    (
        0x05,
        "ESME_RALYBND",
        S.PROVIDER_ERROR,
        "This account is already bound (another connection uses it).",
        "Учётная запись уже подключена (её использует другое соединение).",
    ),
    (0x06, "ESME_RINVPRTFLG", S.REJECTED, "Invalid priority flag.", "Неверный флаг приоритета."),
    (
        0x07,
        "ESME_RINVREGDLVFLG",
        S.REJECTED,
        "Invalid registered_delivery flag.",
        "Неверный флаг запроса отчёта о доставке.",
    ),
    (
        0x08,
        "ESME_RSYSERR",
        S.RETRY,
        "SMSC system error; the message will be retried.",
        "Системная ошибка SMSC; сообщение будет отправлено повторно.",
    ),
    (
        0x0A,
        "ESME_RINVSRCADR",
        S.REJECTED,
        "The SMSC refused the sender name (invalid source address).",
        "SMSC отклонил имя отправителя (неверный адрес источника).",
    ),
    (
        0x0B,
        "ESME_RINVDSTADR",
        S.REJECTED,
        "The SMSC refused the recipient number (invalid destination address).",
        "SMSC отклонил номер получателя (неверный адрес назначения).",
    ),
    (0x0C, "ESME_RINVMSGID", S.REJECTED, "Invalid message id.", "Неверный id сообщения."),
    (
        0x0D,
        "ESME_RBINDFAIL",
        S.PROVIDER_ERROR,
        "The SMSC refused the bind (the account is blocked, or this IP address is not allowed).",
        "SMSC отказал в подключении (учётная запись заблокирована или IP-адрес не разрешён).",
    ),
    (
        0x0E,
        "ESME_RINVPASWD",
        S.PROVIDER_ERROR,
        "The SMSC refused the password.",
        "SMSC отклонил пароль.",
    ),
    (
        0x0F,
        "ESME_RINVSYSID",
        S.PROVIDER_ERROR,
        "The SMSC does not know this system_id (login).",
        "SMSC не знает такой system_id (логин).",
    ),
    (0x11, "ESME_RCANCELFAIL", S.REJECTED, "cancel_sm failed.", "Не удалось отменить сообщение."),
    (
        0x13,
        "ESME_RREPLACEFAIL",
        S.REJECTED,
        "replace_sm failed.",
        "Не удалось заменить сообщение.",
    ),
    (
        0x14,
        "ESME_RMSGQFUL",
        S.RETRY,
        "The SMSC's message queue is full; the message will be retried.",
        "Очередь сообщений SMSC переполнена; сообщение будет отправлено повторно.",
    ),
    (0x15, "ESME_RINVSERTYP", S.REJECTED, "Invalid service_type.", "Неверный service_type."),
    (
        0x33,
        "ESME_RINVNUMDESTS",
        S.REJECTED,
        "Invalid number of destinations.",
        "Неверное число получателей.",
    ),
    (
        0x34,
        "ESME_RINVDLNAME",
        S.REJECTED,
        "Invalid distribution list name.",
        "Неверное имя списка рассылки.",
    ),
    (
        0x40,
        "ESME_RINVDESTFLAG",
        S.REJECTED,
        "Invalid destination flag.",
        "Неверный флаг адреса назначения.",
    ),
    (
        0x42,
        "ESME_RINVSUBREP",
        S.REJECTED,
        "Invalid submit with replace request.",
        "Неверный запрос отправки с заменой.",
    ),
    (
        0x43,
        "ESME_RINVESMCLASS",
        S.REJECTED,
        "Invalid esm_class (message mode or type).",
        "Неверный esm_class (режим или тип сообщения).",
    ),
    (
        0x44,
        "ESME_RCNTSUBDL",
        S.REJECTED,
        "Cannot submit to a distribution list.",
        "Нельзя отправить на список рассылки.",
    ),
    (
        0x45,
        "ESME_RSUBMITFAIL",
        S.RETRY,
        "The SMSC could not submit the message; it will be retried.",
        "SMSC не смог принять сообщение; оно будет отправлено повторно.",
    ),
    (
        0x48,
        "ESME_RINVSRCTON",
        S.REJECTED,
        "Invalid source address type of number (TON).",
        "Неверный тип номера отправителя (TON).",
    ),
    (
        0x49,
        "ESME_RINVSRCNPI",
        S.REJECTED,
        "Invalid source address numbering plan (NPI).",
        "Неверный план нумерации отправителя (NPI).",
    ),
    (
        0x50,
        "ESME_RINVDSTTON",
        S.REJECTED,
        "Invalid destination type of number (TON).",
        "Неверный тип номера получателя (TON).",
    ),
    (
        0x51,
        "ESME_RINVDSTNPI",
        S.REJECTED,
        "Invalid destination numbering plan (NPI).",
        "Неверный план нумерации получателя (NPI).",
    ),
    (
        0x53,
        "ESME_RINVSYSTYP",
        S.PROVIDER_ERROR,
        "The SMSC refused the system_type.",
        "SMSC отклонил system_type.",
    ),
    (
        0x54,
        "ESME_RINVREPFLAG",
        S.REJECTED,
        "Invalid replace_if_present flag.",
        "Неверный флаг replace_if_present.",
    ),
    (
        0x55,
        "ESME_RINVNUMMSGS",
        S.REJECTED,
        "Invalid number of messages.",
        "Неверное число сообщений.",
    ),
    (
        0x58,
        "ESME_RTHROTTLED",
        S.RETRY,
        "The SMSC throttled the message: the account's messages-per-second limit was exceeded. "
        "It will be retried; lower the rate limit to the contracted throughput.",
        "SMSC ограничил скорость: превышен лимит сообщений в секунду. Сообщение будет "
        "отправлено повторно; снизьте лимит скорости до указанного в договоре.",
    ),
    (
        0x61,
        "ESME_RINVSCHED",
        S.REJECTED,
        "Invalid scheduled delivery time.",
        "Неверное время отложенной доставки.",
    ),
    (
        0x62,
        "ESME_RINVEXPIRY",
        S.REJECTED,
        "Invalid validity period.",
        "Неверный срок жизни сообщения.",
    ),
    (
        0x63,
        "ESME_RINVDFTMSGID",
        S.REJECTED,
        "The predefined message is invalid or not found.",
        "Предопределённое сообщение неверно или не найдено.",
    ),
    (
        0x64,
        "ESME_RX_T_APPN",
        S.RETRY,
        "Temporary application error at the SMSC; the message will be retried.",
        "Временная ошибка приложения SMSC; сообщение будет отправлено повторно.",
    ),
    (
        0x65,
        "ESME_RX_P_APPN",
        S.REJECTED,
        "Permanent application error at the SMSC.",
        "Постоянная ошибка приложения SMSC.",
    ),
    (
        0x66,
        "ESME_RX_R_APPN",
        S.REJECTED,
        "The SMSC application rejected the message.",
        "Приложение SMSC отклонило сообщение.",
    ),
    (0x67, "ESME_RQUERYFAIL", S.REJECTED, "query_sm failed.", "Не удалось запросить статус."),
    (
        0xC0,
        "ESME_RINVOPTPARSTREAM",
        S.REJECTED,
        "Error in the optional part of the request.",
        "Ошибка в необязательной части запроса.",
    ),
    (
        0xC1,
        "ESME_ROPTPARNOTALLWD",
        S.REJECTED,
        "An optional parameter is not allowed.",
        "Необязательный параметр не разрешён.",
    ),
    (
        0xC2,
        "ESME_RINVPARLEN",
        S.REJECTED,
        "Invalid parameter length.",
        "Неверная длина параметра.",
    ),
    (
        0xC3,
        "ESME_RMISSINGOPTPARAM",
        S.REJECTED,
        "An expected optional parameter is missing.",
        "Отсутствует ожидаемый необязательный параметр.",
    ),
    (
        0xC4,
        "ESME_RINVOPTPARAMVAL",
        S.REJECTED,
        "Invalid optional parameter value.",
        "Неверное значение необязательного параметра.",
    ),
    (0xFE, "ESME_RDELIVERYFAILURE", S.REJECTED, "Delivery failure.", "Ошибка доставки."),
    (0xFF, "ESME_RUNKNOWNERR", S.REJECTED, "Unknown error.", "Неизвестная ошибка."),
]

#: command_status -> its row.
CODES: dict[int, ESMEStatus] = {row[0]: ESMEStatus(*row) for row in _ROWS}
#: ESME_R* name -> command_status.
BY_NAME: dict[str, int] = {row.name: row.code for row in CODES.values()}

ESME_ROK = 0x00
ESME_RINVBNDSTS = 0x04
ESME_RSYSERR = 0x08
ESME_RBINDFAIL = 0x0D
ESME_RINVPASWD = 0x0E
ESME_RINVSYSID = 0x0F
ESME_RMSGQFUL = 0x14
ESME_RTHROTTLED = 0x58
ESME_RX_P_APPN = 0x65


def status_name(code: int) -> str:
    """``ESME_RTHROTTLED`` for 0x58; ``SMPP_0x00000400`` for a code the table does not know."""
    row = CODES.get(code)
    return row.name if row else f"SMPP_0x{code:08X}"


def classify_status(code: int) -> tuple[SendStatus, str]:
    """How to handle a submit_sm answered ``code``, and what it means to a person."""
    row = CODES.get(code)
    if row is not None:
        return row.handling, row.message()
    return S.REJECTED, pick(
        f"The SMSC refused the message (SMPP error 0x{code:08X}).",
        f"SMSC отклонил сообщение (ошибка SMPP 0x{code:08X}).",
    )


# --- the backend's own outcomes --------------------------------------------------------------
#: key -> (English, Russian); ``{name}`` placeholders are filled by ``text``.
TEXTS: dict[str, tuple[str, str]] = {
    "connect_failed": (
        "Could not connect to the SMSC {where} ({detail}). Check the address in {env} and that "
        "the SMSC allows this server's IP address.",
        "Не удалось подключиться к SMSC {where} ({detail}). Проверьте адрес в {env} и что SMSC "
        "разрешает IP-адрес этого сервера.",
    ),
    "tls_error": (
        "TLS with the SMSC {where} failed ({detail}). If its certificate is signed by a private "
        "CA, add ?ca_bundle=/path/to/ca.pem to {env}.",
        "Ошибка TLS при подключении к SMSC {where} ({detail}). Если его сертификат подписан "
        "частным УЦ, добавьте ?ca_bundle=/path/to/ca.pem в {env}.",
    ),
    "bind_refused": (
        "The SMSC {where} refused the bind: {reason} Check system_id, password and system_type "
        "in {env}.",
        "SMSC {where} отказал в подключении: {reason} Проверьте system_id, пароль и "
        "system_type в {env}.",
    ),
    "bind_closed": (
        "The SMSC {where} closed the connection during the bind: usually this server's IP "
        "address is not allowed.",
        "SMSC {where} закрыл соединение при подключении: обычно это значит, что IP-адрес этого "
        "сервера не разрешён.",
    ),
    "bind_timeout": (
        "The SMSC {where} did not answer the bind within {seconds} s.",
        "SMSC {where} не ответил на запрос подключения за {seconds} с.",
    ),
    "not_connected": (
        "Not connected to the SMSC {where} yet; the message will be retried.",
        "Нет соединения с SMSC {where}; сообщение будет отправлено повторно.",
    ),
    "not_sent": (
        "The SMPP connection was lost before the message was sent; it will be retried.",
        "Соединение SMPP разорвано до отправки сообщения; оно будет отправлено повторно.",
    ),
    "ambiguous": (
        "The SMPP connection was lost after the message was submitted and before the SMSC "
        "answered: it may or may not have been accepted.",
        "Соединение SMPP разорвано после отправки сообщения и до ответа SMSC: неизвестно, "
        "принято ли оно.",
    ),
    "partial": (
        "Only {accepted} of {count} parts were accepted (part {part}: {reason}) The message is "
        "not sent again, so the accepted parts are not repeated.",
        "Принято только {accepted} из {count} частей (часть {part}: {reason}) Сообщение не "
        "отправляется повторно, чтобы принятые части не пришли дважды.",
    ),
    "sender_too_long": (
        "The sender “{sender}” is too long: at most 11 characters, or 15 digits for a number.",
        "Отправитель «{sender}» слишком длинный: не более 11 символов или 15 цифр для номера.",
    ),
    "sender_characters": (
        "The sender name “{sender}” may only hold Latin letters, digits, spaces and "
        "punctuation, and must not start or end with a space.",
        "Имя отправителя «{sender}» может содержать только латинские буквы, цифры, пробелы и "
        "знаки препинания и не может начинаться или заканчиваться пробелом.",
    ),
}


def text(key: str, **values: object) -> str:
    """The text ``key`` of ``TEXTS`` in the active language, with ``values`` filled in."""
    return pick(*TEXTS[key]).format(**values)
