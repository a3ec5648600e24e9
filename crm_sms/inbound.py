"""Replies from subscribers: opt-out keywords, the opt-out, the confirmation; and the unsubscribe
phrase of advertising texts (38-FZ art. 18: a subscriber can refuse advertising at any time).

A provider posts an incoming SMS to ``<prefix>/callback/<alias>/<token>/inbound/`` (SMSC also to
its delivery-report URL); the provider's backend parses it (``parse_inbound``) and
:func:`handle_inbound` acts on each message:

- a reply whose whole text is an opt-out keyword (``CRM_SMS["OPT_OUT_KEYWORDS"]``: STOP, СТОП,
  ОТПИСКА, ОТПИСАТЬСЯ, UNSUBSCRIBE), compared without case, surrounding spaces, punctuation and
  symbols ("Stop!", " стоп. " match; "stop please" does not), opts out every contact with the
  sender's phone (``crm_sms.consent.opt_out``, source "sms reply": a ContactEvent each, their
  consent withdrawn, their queued messages cancelled) and, when ``OPT_OUT_REPLY`` is set, queues
  that text back to the phone through the provider the reply came from;
- any other text is logged (not its words) and ignored; a phone no contact has is logged, and
  nothing is stored or sent.

Idempotent: providers repeat a webhook they think was lost. The confirmation's ``msg_id`` is made
from the provider and the incoming message's id, and ``Message.msg_id`` is unique, so a repeat
finds the confirmation and sends nothing more, also when two copies arrive at once (the second
insert fails). The opt-out itself only changes contacts not yet opted out.

The confirmation is not queued by ``send_sms``, which refuses an opted-out contact: it goes to
someone who has just opted out, once per STOP, with ``send_sms``'s checks (provider, text,
sender).
"""

from __future__ import annotations

import hashlib
import logging
import unicodedata
from collections import Counter
from collections.abc import Iterable
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Q

from . import conf
from .backends.base import InboundMessage
from .models import MSG_ID_ALPHABET, MSG_ID_LENGTH, Contact, Message, MessageStatus

logger = logging.getLogger("crm_sms.inbound")

#: What ``handle_inbound`` counts, per message.
OPTED_OUT = "opted_out"  # a keyword from a contact's phone (contacts changed: ``contacts``)
REPEATED = "repeated"  # a keyword message handled before (its confirmation exists)
UNKNOWN_PHONE = "unknown_phone"  # a keyword from a phone no contact has
INVALID_PHONE = "invalid_phone"  # a keyword from something that is not a phone number
IGNORED = "ignored"  # not a keyword
#: Longest reply compared with the keywords (a keyword is a word or two).
MAX_KEYWORD_LENGTH = 100
#: Between an advertising text and its unsubscribe phrase.
UNSUBSCRIBE_SEPARATOR = "\n"


# --- keywords ----------------------------------------------------------------------------------
def normalize_reply(text: str) -> str:
    """``text`` as keywords are compared: case-folded, punctuation, symbols, controls and
    spaces turned into single spaces, trimmed (``" Стоп! "`` -> ``"стоп"``)."""
    kept = (" " if unicodedata.category(ch)[0] in "PSZC" else ch for ch in text.casefold())
    return " ".join("".join(kept).split())


def opt_out_keywords() -> frozenset[str]:
    """The configured keywords (``OPT_OUT_KEYWORDS``), normalized."""
    words = conf.get_setting("OPT_OUT_KEYWORDS") or ()
    if isinstance(words, str):
        words = conf.word_list(words)
    return frozenset(w for w in (normalize_reply(str(word)) for word in words) if w)


def is_opt_out(text: str) -> bool:
    """Whether ``text`` is an opt-out keyword (see ``normalize_reply``)."""
    if not text or len(text) > MAX_KEYWORD_LENGTH:
        return False
    return normalize_reply(text) in opt_out_keywords()


# --- handling replies -------------------------------------------------------------------------
def handle_inbound(messages: Iterable[InboundMessage], *, provider: str) -> dict[str, int]:
    """Act on incoming messages that came through provider ``provider`` (an alias): opt the
    senders of keywords out and confirm, ignore the rest (see the module's docstring).

    Returns counts: messages by outcome (``opted_out``, ``repeated``, ``unknown_phone``,
    ``invalid_phone``, ``ignored``), ``contacts`` opted out now and ``confirmations`` queued.
    Each message is handled in its own transaction; a database error propagates (the provider
    is then answered 500 and may post it again)."""
    counts: Counter[str] = Counter()
    for message in messages:
        if not is_opt_out(message.text):
            counts[IGNORED] += 1
            logger.info(
                "An incoming message from %s via %s (%d characters) is no opt-out keyword: ignored",
                mask_phone(message.from_phone),
                provider,
                len(message.text or ""),
            )
            continue
        outcome, contacts, confirmed = _opt_out_sender(message, provider)
        counts[outcome] += 1
        counts["contacts"] += contacts
        counts["confirmations"] += confirmed
    return dict(counts)


def _opt_out_sender(message: InboundMessage, provider: str) -> tuple[str, int, int]:
    """(outcome, contacts opted out now, confirmations queued) of one keyword message."""
    from .consent import SOURCE_SMS_REPLY, opt_out
    from .phones import normalize_phone

    masked = mask_phone(message.from_phone)
    try:
        phone = normalize_phone(message.from_phone)
    except ValidationError:
        logger.warning("An opt-out reply via %s from %r: not a phone number", provider, masked)
        return INVALID_PHONE, 0, 0
    pks = contacts_with_phone(phone)
    if not pks:
        logger.warning(
            "An opt-out reply via %s from %s, a phone no contact has: nothing to opt out",
            provider,
            masked,
        )
        return UNKNOWN_PHONE, 0, 0
    msg_id = confirmation_msg_id(provider, message)
    if Message.objects.filter(msg_id=msg_id).exists():
        logger.info("An opt-out reply via %s from %s came again: already handled", provider, masked)
        return REPEATED, 0, 0
    reason = f"{message.text.strip()[:50]} ({provider} {message.provider_message_id})"
    with transaction.atomic():
        changed = opt_out(pks, source=SOURCE_SMS_REPLY, reason=reason)
        try:
            confirmation = queue_confirmation(phone, provider=provider, msg_id=msg_id, pk=pks[0])
        except IntegrityError:  # the same message, handled at this moment by another request
            transaction.set_rollback(True)
            return REPEATED, 0, 0
    logger.info(
        "Opt-out reply via %s from %s: %d contact(s) opted out now, %s",
        provider,
        masked,
        changed,
        "confirmation queued" if confirmation else "no confirmation",
    )
    return OPTED_OUT, changed, int(confirmation is not None)


def contacts_with_phone(phone: str) -> list[int]:
    """The ids of the contacts with ``phone`` (E.164): stored so, or in another notation that
    normalizes to it (the few rows that are not E.164 are read and normalized)."""
    from .outbox.counting import E164_SQL

    pks = list(Contact.objects.filter(phone=phone).values_list("pk", flat=True))
    odd = Contact.objects.filter(~Q(phone__regex=E164_SQL)).values_list("pk", "phone")
    pks += [pk for pk, raw in odd.iterator() if _normalized(raw) == phone]
    return sorted(set(pks))


def _normalized(raw: Any) -> str | None:
    from .phones import normalize_phone

    try:
        return normalize_phone(raw)
    except ValidationError:
        return None


def confirmation_msg_id(provider: str, message: InboundMessage) -> str:
    """The msg_id of the confirmation of ``message``: the same for every copy of it (made from
    the provider and its id, or its sender and text when it has no id)."""
    key = message.provider_message_id or f"{message.from_phone}\n{message.to}\n{message.text}"
    number = int.from_bytes(hashlib.sha256(f"opt-out\n{provider}\n{key}".encode()).digest())
    chars = []
    for _ in range(MSG_ID_LENGTH):
        number, index = divmod(number, len(MSG_ID_ALPHABET))
        chars.append(MSG_ID_ALPHABET[index])
    return "".join(chars)


def queue_confirmation(phone: str, *, provider: str, msg_id: str, pk: Any = None) -> Any:
    """Queue ``OPT_OUT_REPLY`` to ``phone`` through ``provider`` under ``msg_id``, linked to
    contact ``pk``; the Message, or None when no reply is configured or the provider cannot
    send it (logged). IntegrityError when ``msg_id`` exists (the caller's transaction must
    then end: call it inside ``transaction.atomic``)."""
    from .outbox.recipients import resolve_provider, resolve_sender
    from .text import sms_info
    from .translit import prepare_text

    text = str(conf.get_setting("OPT_OUT_REPLY") or "").strip()
    if not text:
        return None
    try:
        alias, backend = resolve_provider(provider)
        text = prepare_text(text)
        backend.validate_text(text)
        sender = resolve_sender(backend, None)
    except ValidationError as exc:
        logger.error("The opt-out confirmation cannot be sent via %s: %s", provider, exc)
        return None
    with transaction.atomic():  # a savepoint: a duplicate msg_id leaves the caller usable
        return Message.objects.create(
            contact_id=pk,
            phone=phone,
            text=text,
            sender=sender,
            provider=alias,
            status=MessageStatus.QUEUED,
            segments=sms_info(text).segments,
            msg_id=msg_id,
        )


def mask_phone(phone: str) -> str:
    """A phone for logs: its first four and last two characters (``+790*****12``)."""
    phone = str(phone or "")
    if len(phone) <= 6:
        return "*" * len(phone)
    return phone[:4] + "*" * (len(phone) - 6) + phone[-2:]


def inbound_url(alias: str = "default") -> str | None:
    """Where provider ``alias`` should post incoming messages (to paste into its account),
    or None without ``PUBLIC_URL`` and ``CALLBACK_TOKEN``."""
    from django.urls import reverse

    public_url = conf.get_setting("PUBLIC_URL")
    tokens = conf.callback_tokens()
    if not (public_url and tokens):
        return None
    path = reverse("crm_sms:inbound", kwargs={"provider": alias, "token": tokens[0]})
    return public_url.rstrip("/") + path


# --- the unsubscribe phrase -------------------------------------------------------------------
def unsubscribe_text() -> str:
    """The phrase appended to advertising texts (``UNSUBSCRIBE_TEXT``), "" for none."""
    return str(conf.get_setting("UNSUBSCRIBE_TEXT") or "").strip()


def with_unsubscribe(text: str) -> str:
    """``text`` with the unsubscribe phrase on a line of its own at the end, unless none is
    configured or ``text`` has it already (any case and spacing). Apply it to advertising
    texts before they are counted or rendered, so the counter, the preview and what is sent
    agree."""
    phrase = unsubscribe_text()
    if not phrase or _squeezed(phrase) in _squeezed(text):
        return text
    return text.rstrip() + UNSUBSCRIBE_SEPARATOR + phrase


def unsubscribe_config() -> dict[str, str]:
    """What the live counter needs to do as ``with_unsubscribe`` does for an advertising text:
    when ``phrase`` is not empty and the text (case-folded, runs of white space as one space)
    does not contain it, strip the text's trailing white space and add ``separator`` and
    ``phrase``."""
    return {"phrase": unsubscribe_text(), "separator": UNSUBSCRIBE_SEPARATOR}


def _squeezed(text: str) -> str:
    return " ".join(text.casefold().split())
