"""A big, realistic crm-sms database for the admin benchmark (bench/admin_pages.py), built with
the project's fast path (COPY through :func:`crm_sms.bulk.insert_rows`).

Russian names (a few very common surnames, a long tail), e-mails on Russian mail services, a
few odd and invalid phones, groups of very different sizes, some contacts opted out; campaigns
of varied sizes (the smallest is the oldest), one running, one paused, one cancelled, drafts;
messages in every status and 2-4 events each. The secondary indexes and constraints of the big
tables are dropped during the load and made again afterwards (one sort each instead of 5M
index insertions), then VACUUM ANALYZE (visibility map and statistics, as a live database has).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

CHUNK = 100_000

SURNAMES = (
    "Иванов Смирнов Кузнецов Попов Васильев Петров Соколов Михайлов Новиков Фёдоров Морозов "
    "Волков Алексеев Лебедев Семёнов Егоров Павлов Козлов Степанов Николаев Орлов Андреев "
    "Макаров Никитин Захаров Зайцев Соловьёв Борисов Яковлев Григорьев Романов Воробьёв Сергеев "
    "Кузьмин Фролов Александров Дмитриев Королёв Гусев Киселёв Ильин Максимов Поляков Сорокин "
    "Виноградов Ковалёв Белов Медведев Антонов Тарасов Жуков Баранов Филиппов Комаров Давыдов "
    "Беляев Герасимов Богданов Осипов Сидоров Матвеев Титов Марков Миронов Крылов Куликов Карпов "
    "Власов Мельников Денисов Гаврилов Тихонов Казаков Афанасьев Данилов Савельев Тимофеев Фомин "
    "Чернов Абрамов Мартынов Ефимов Федотов Щербаков Назаров Калинин Исаев Чернышёв Быков Маслов "
    "Родионов Коновалов Лазарев Воронин Климов Филатов Пономарёв Голубев Кудрявцев Прохоров "
    "Наумов Потапов Журавлёв Овчинников Трофимов Леонов Соболев Ермаков Колесников Гончаров "
    "Емельянов Никифоров Грачёв Котов Гришин Ефремов Архипов Громов Кириллов Малышев Панов "
    "Моисеев Румянцев Акимов Кондратьев Бирюков Горбунов Анисимов Ерёмин Тихомиров Галкин "
    "Лукьянов Михеев Скворцов Юдин Белоусов Нестеров Симонов Прокофьев Харитонов Князев Цветков "
    "Левин Митрофанов Воронов Аксёнов Софронов Мальцев Логинов Горшков Савин Краснов Майоров "
    "Демидов Елисеев Рыбаков Сафонов Плотников Дёмин Хохлов Жданов Руднев Игнатов Шевченко "
    "Бондаренко Ковальчук Ткаченко Кравченко Ким Цой Пак Островский Вишневский Яблонский "
    "Добровольский Хабибуллин Гарипов Сафин Валиев Алиев Мамедов Гусейнов Бойко Мороз Лысенко"
).split()
MALE = (
    "Александр Сергей Дмитрий Андрей Алексей Максим Евгений Иван Михаил Артём Николай Владимир "
    "Игорь Павел Роман Денис Олег Юрий Виктор Антон Константин Кирилл Илья Никита Тимур Руслан"
).split()
FEMALE = (
    "Елена Ольга Наталья Анна Татьяна Ирина Мария Екатерина Светлана Юлия Анастасия Марина "
    "Людмила Валентина Галина Дарья Ксения Алина Виктория Полина Софья Вера Надежда Любовь"
).split()
PATRONYMIC_ROOTS = (
    "Александров Сергеев Дмитриев Андреев Алексеев Иванов Михайлов Николаев Владимиров "
    "Павлов Викторов Юрьев Олегов Петров Борисов Васильев Анатольев Геннадьев Евгеньев"
).split()
SYLLABLES = (
    "бар бел вер гор дуб жар зар кал лип мох нар пес рад сад тур фил хар чер шум ясн".split()
)
DOMAINS = ("mail.ru", "yandex.ru", "gmail.com", "bk.ru", "inbox.ru", "list.ru", "rambler.ru")
# Group name -> share of contacts in it.
GROUPS = {
    "VIP": 0.02,
    "Опт": 0.08,
    "Розница": 0.35,
    "Москва": 0.25,
    "Санкт-Петербург": 0.12,
    "Новые": 0.05,
    "Спящие": 0.15,
    "Сотрудники": 0.001,
}
TRANSLIT = str.maketrans(
    {
        **dict(zip("абвгдезийклмнопрстуфхцы", "abvgdezijklmnoprstufhcy", strict=True)),
        "ё": "e",
        "э": "e",
        "ж": "zh",
        "ч": "ch",
        "ш": "sh",
        "щ": "sch",
        "ю": "yu",
        "я": "ya",
        "ь": "",
        "ъ": "",
    }
)
NOW = datetime.now(UTC).replace(microsecond=0)
SPAN = timedelta(days=730)


def phone_of(contact_id: int) -> str:
    """A unique +79… number per id; a few legacy rows in other notations or invalid."""
    digits = f"{(contact_id * 7919 + 12345) % 10**9:09d}"
    if contact_id % 100_000 == 7:
        return f"12-{contact_id}"  # invalid
    if contact_id % 20_000 == 3:
        return f"8 (9{digits[:2]}) {digits[2:5]}-{digits[5:7]}-{digits[7:]}"  # not E.164
    return f"+79{digits}"


def _feminine(surname: str) -> str:
    if surname.endswith(("ов", "ев", "ёв", "ин", "ын")):
        return surname + "а"
    if surname.endswith("ский"):
        return surname[:-2] + "ая"
    return surname


def _surname_picker(rnd: random.Random):
    weights = [1 / (rank + 1) ** 0.6 for rank in range(len(SURNAMES))]
    cumulative = []
    total = 0.0
    for w in weights:
        total += w
        cumulative.append(total)

    def pick() -> str:
        if rnd.random() < 0.3:  # the long tail: made-up surnames
            root = "".join(rnd.choice(SYLLABLES) for _ in range(rnd.randint(1, 2)))
            return root.capitalize() + rnd.choice(("ов", "ев", "ин", "ский", "енко"))
        x = rnd.random() * total
        lo, hi = 0, len(cumulative) - 1
        while lo < hi:
            mid = (lo + hi) // 2
            if cumulative[mid] < x:
                lo = mid + 1
            else:
                hi = mid
        return SURNAMES[lo]

    return pick


def contact_rows(count: int, first_names: list[str]) -> Iterator[tuple]:
    """(id, last, first, middle, phone, email, opted_out, opted_out_at, external_id, created)."""
    rnd = random.Random(1)
    surname = _surname_picker(rnd)
    for i in range(1, count + 1):
        last = surname()
        if rnd.random() < 0.5:
            first, middle = rnd.choice(MALE), rnd.choice(PATRONYMIC_ROOTS) + "ич"
        else:
            first, middle = rnd.choice(FEMALE), rnd.choice(PATRONYMIC_ROOTS) + "на"
            last = _feminine(last)
        first_names.append(first)
        email = ""
        if rnd.random() < 0.6:
            local = last.lower().translate(TRANSLIT)
            email = (
                f"{local}.{first.lower().translate(TRANSLIT)[:1]}{i % 9973}@{rnd.choice(DOMAINS)}"
            )
        created = NOW - SPAN + SPAN * (i / count)
        opted = rnd.random() < 0.03
        yield (
            i,
            last,
            first,
            middle if rnd.random() < 0.8 else "",
            phone_of(i),
            email,
            opted,
            created + timedelta(days=rnd.randint(0, 30)) if opted else None,
            f"CRM-{i:07d}" if rnd.random() < 0.5 else "",
            created,
        )


def membership_rows(count: int, group_ids: dict[str, int]) -> Iterator[tuple]:
    """(id, contact_id, group_id): each contact in each group with the group's share."""
    rnd = random.Random(2)
    shares = [(group_ids[name], share) for name, share in GROUPS.items()]
    pk = 0
    for contact in range(1, count + 1):
        for group, share in shares:
            if rnd.random() < share:
                pk += 1
                yield pk, contact, group


def campaign_plan(messages: int, rnd: random.Random) -> list[dict]:
    """Campaigns summing to ``messages``: the oldest is the smallest, sizes spread log-uniformly
    (a few big ones), the newest running, one paused, one cancelled, then three drafts."""
    sizes = [min(37, messages)]
    left = messages - sizes[0]
    top = max(300, messages // 8)
    while left > 0:
        size = min(left, int(math.exp(rnd.uniform(math.log(200), math.log(top)))))
        if left - size < 200:
            size = left
        sizes.append(size)
        left -= size
    plan = [{"size": s, "status": "completed"} for s in sizes]
    if len(plan) > 3:
        plan[-1]["status"] = "running"
        plan[-2]["status"] = "paused"
        plan[len(plan) // 2]["status"] = "cancelled"
    plan += [{"size": 0, "status": "draft"} for _ in range(3)]
    return plan


FINAL_MIX = (
    (880, "delivered"),
    (940, "undelivered"),
    (970, "failed"),
    (996, "sent"),
    (1000, "uncertain"),
)
_SENT = (("send", "queued", "sending"), ("send", "sending", "sent"))
_RETRIED = (("send", "queued", "sending"), ("retry", "sending", "queued"))
# The (source, old status, new status) of a message's events, by its final status.
EVENT_PATHS = {
    "delivered": (*_SENT, ("callback", "sent", "delivered")),
    "undelivered": (*_SENT, ("callback", "sent", "undelivered")),
    "sent": (*_SENT, ("poll", "sent", "sent")),
    "failed": (*_RETRIED, ("send", "queued", "failed")),
    "uncertain": (*_RETRIED, ("send", "sending", "uncertain")),
    "cancelled": (*_RETRIED, ("admin", "queued", "cancelled")),
    "queued": (*_RETRIED, ("retry", "queued", "queued")),
    "sending": (*_RETRIED, ("send", "queued", "sending")),
}


def message_status(campaign_status: str, index: int, size: int) -> str:
    """A plausible status for the ``index``-th message of a campaign in ``campaign_status``."""
    h = (index * 2654435761) % 1000
    done = {"running": 0.6, "paused": 0.3, "cancelled": 0.4}.get(campaign_status, 1.0)
    if index >= size * done:
        if campaign_status == "cancelled":
            return "cancelled"
        return "sending" if campaign_status == "running" and h < 5 else "queued"
    return next(status for bound, status in FINAL_MIX if h < bound)


# --- loading ----------------------------------------------------------------------------------


def _chunks(rows: Iterator[tuple], size: int = CHUNK) -> Iterator[list[tuple]]:
    chunk: list[tuple] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def copy_rows(model, varying: list[str], rows: Iterator[tuple], **constants) -> int:
    """COPY ``rows`` (values of ``varying``, in order) into ``model``'s table; the fields not
    named get ``constants`` or their default (fields with a database default are left out)."""
    from django.db.models.fields import NOT_PROVIDED

    from crm_sms.bulk import RowInserter

    for f in model._meta.concrete_fields:
        named = f.name in varying or f.name in constants or f.primary_key
        if not named and f.db_default is NOT_PROVIDED:
            constants[f.name] = f.get_default()
    inserter = RowInserter(model, constants, varying)
    return sum(inserter.insert(chunk) for chunk in _chunks(rows))


def secondary_objects(cursor, tables: list[str]) -> tuple[list, list]:
    """The constraints (unique, foreign keys) and plain indexes of ``tables``, to drop during a
    load: ``[(table, name, definition)]`` and ``[(name, CREATE INDEX …)]``."""
    cursor.execute(
        "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid), contype"
        " FROM pg_constraint WHERE conrelid = ANY(%s::regclass[]) AND contype IN ('f', 'u')"
        " ORDER BY contype DESC",  # unique before foreign keys when restoring
        [tables],
    )
    constraints = [row[:3] for row in cursor.fetchall()]
    cursor.execute(
        "SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid) FROM pg_index i"
        " WHERE i.indrelid = ANY(%s::regclass[]) AND NOT i.indisprimary AND NOT EXISTS ("
        "  SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid"
        "  AND c.contype IN ('u', 'p', 'x'))",
        [tables],
    )
    return constraints, cursor.fetchall()


def drop_secondary(cursor, constraints: list, indexes: list) -> None:
    for table, name, _ in reversed(constraints):  # foreign keys first
        cursor.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
    for name, _ in indexes:
        cursor.execute(f"DROP INDEX {name}")


def restore_secondary(cursor, constraints: list, indexes: list) -> None:
    cursor.execute("SET maintenance_work_mem = '1GB'")
    for _, definition in indexes:
        cursor.execute(definition)
    for table, name, definition in constraints:
        cursor.execute(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}')


def load_contacts(count: int) -> tuple[list[str], dict[str, int]]:
    """Contacts and group memberships; returns the first names (by id - 1) and the group ids."""
    from crm_sms.models import Contact, ContactGroup

    first_names: list[str] = []
    rows = (
        (*row[:9], "звонить после 18" if row[0] % 11 == 0 else "", row[9], row[9])
        for row in contact_rows(count, first_names)
    )
    varying = ["id", "last_name", "first_name", "middle_name", "phone", "email", "opted_out"]
    varying += ["opted_out_at", "external_id", "notes", "created_at", "updated_at"]
    copy_rows(Contact, varying, rows)
    groups = {
        name: ContactGroup.objects.create(name=name, description=f"{share:.1%}").pk
        for name, share in GROUPS.items()
    }
    copy_rows(
        Contact.groups.through, ["id", "contact", "contactgroup"], membership_rows(count, groups)
    )
    return first_names, groups


def make_campaigns(plan: list[dict], contacts: int, rnd: random.Random) -> None:
    """The Campaign rows of ``plan`` (oldest first); each plan entry gets its ``id``, start time,
    text template and first contact."""
    from crm_sms.models import Campaign

    for k, entry in enumerate(plan):
        started = NOW - SPAN + SPAN * (k / max(1, len(plan)))
        personal = k % 2 == 0
        template = (
            "{name}, скидка 15% на всё до воскресенья!"
            if personal
            else ("Акция недели: второй товар за полцены. Подробности на сайте.")
        )
        campaign = Campaign.objects.create(
            name=f"Рассылка {k + 1}: {entry['size']} получателей",
            text=template.replace("{name}", "{{ first_name }}"),
            sender="SHOP",
            provider="default",
            status=entry["status"],
            recipients_count=entry["size"],
            excluded={"opted_out": entry["size"] // 33, "invalid": 0, "duplicate": 0},
        )
        is_draft = entry["status"] == "draft"
        Campaign.objects.filter(pk=campaign.pk).update(
            created_at=started,
            started_at=None if is_draft else started,
            finished_at=started + timedelta(hours=2) if entry["status"] == "completed" else None,
        )
        entry.update(id=campaign.pk, started=started, template=template)
        entry["first_contact"] = rnd.randrange(contacts) if contacts else 0


def message_rows(plan: list[dict], contacts: int, first_names: list[str]) -> Iterator[tuple]:
    from crm_sms.models import new_msg_ids

    pk = 0
    for entry in plan:
        size, status = entry["size"], entry["status"]
        ids = new_msg_ids(size)
        for j in range(size):
            pk += 1
            contact = (entry["first_contact"] + j) % contacts + 1
            created = entry["started"] + timedelta(milliseconds=5 * j)
            state = message_status(status, j, size)
            done = state not in ("queued", "sending")
            yield (
                pk,
                entry["id"],
                contact,
                phone_of(contact),
                entry["template"].replace("{name}", first_names[contact - 1]),
                "SHOP",
                "default",
                ids[j],
                str(10**9 + pk) if done else "",
                state,
                "1288" if state == "undelivered" else ("3" if state == "failed" else ""),
                "Абонент недоступен" if state == "failed" else "",
                1 if done else 0,
                created,
                created if state == "sending" else None,
                1 + (j % 7 == 0),
                created,
                created + timedelta(seconds=1) if done else None,
                created + timedelta(seconds=40) if state == "delivered" else None,
                created + timedelta(seconds=40),
            )


MESSAGE_FIELDS = [
    "id",
    "campaign",
    "contact",
    "phone",
    "text",
    "sender",
    "provider",
    "msg_id",
    "provider_message_id",
    "status",
    "error_code",
    "error_message",
    "attempts",
    "next_attempt_at",
    "claimed_at",
    "segments",
    "created_at",
    "sent_at",
    "delivered_at",
    "updated_at",
]


def event_rows(messages: int, events: int) -> Iterator[tuple]:
    """``events`` events over messages 1..``messages`` (2-4 each), read back in id order."""
    from django.db import connection

    base, extra = divmod(events, messages) if messages else (0, 0)
    pk = 0
    with connection.cursor() as cursor:
        for start in range(0, messages, CHUNK):
            cursor.execute(
                "SELECT id, status, created_at FROM crm_sms_message WHERE id > %s AND id <= %s"
                " ORDER BY id",
                [start, start + CHUNK],
            )
            for message_id, status, created in cursor.fetchall():
                path = EVENT_PATHS[status]
                for j in range(base + (message_id <= extra)):
                    source, old, new = path[j % len(path)]
                    pk += 1
                    code = "1288" if new == "undelivered" else ""
                    yield (
                        pk,
                        message_id,
                        source,
                        old,
                        new,
                        code,
                        "",
                        created + timedelta(seconds=20 * (j + 1)),
                    )


def build(contacts: int, messages: int, events: int) -> dict[str, float]:
    """Fill the (migrated, empty) database; returns the seconds of each step."""
    import time

    from django.db import connection

    from crm_sms.models import Contact, Message, MessageEvent

    steps: dict[str, float] = {}
    t = time.perf_counter()
    tables = [Contact._meta.db_table, Contact.groups.through._meta.db_table]
    tables += [Message._meta.db_table, MessageEvent._meta.db_table]
    with connection.cursor() as cursor:
        constraints, indexes = secondary_objects(cursor, tables)
        drop_secondary(cursor, constraints, indexes)
    first_names, _ = load_contacts(contacts)
    steps["contacts"], t = time.perf_counter() - t, time.perf_counter()
    rnd = random.Random(3)
    plan = campaign_plan(messages, rnd)
    make_campaigns(plan, contacts, rnd)
    copy_rows(
        Message, MESSAGE_FIELDS, message_rows(plan, contacts, first_names), last_response=None
    )
    steps["messages"], t = time.perf_counter() - t, time.perf_counter()
    event_fields = ["id", "message", "source", "old_status", "new_status", "error_code"]
    event_fields += ["description", "created_at"]
    copy_rows(MessageEvent, event_fields, event_rows(messages, events), payload=None)
    steps["events"], t = time.perf_counter() - t, time.perf_counter()
    with connection.cursor() as cursor:
        restore_secondary(cursor, constraints, indexes)
        steps["indexes"], t = time.perf_counter() - t, time.perf_counter()
        for table in tables:
            cursor.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"
                f" COALESCE((SELECT max(id) FROM {table}), 0) + 1, false)"
            )
            cursor.execute(f"VACUUM ANALYZE {table}")
    steps["vacuum"] = time.perf_counter() - t
    t = time.perf_counter()
    from crm_sms.campaign_counts import recount

    recount()  # the messages came by COPY, past the counts that transitions keep
    steps["campaign_counts"] = time.perf_counter() - t
    return {k: round(v, 1) for k, v in steps.items()}
