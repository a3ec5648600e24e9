"""Demo data: about 200 realistic Russian contacts in a few groups (for ``make demo``)."""

from __future__ import annotations

import random

from django.db import transaction

from .models import Contact, ContactGroup

MALE = [
    ("Александр", "Александрович"),
    ("Сергей", "Сергеевич"),
    ("Дмитрий", "Дмитриевич"),
    ("Андрей", "Андреевич"),
    ("Алексей", "Алексеевич"),
    ("Максим", "Максимович"),
    ("Евгений", "Евгеньевич"),
    ("Иван", "Иванович"),
    ("Михаил", "Михайлович"),
    ("Николай", "Николаевич"),
    ("Владимир", "Владимирович"),
    ("Павел", "Павлович"),
]
FEMALE = [
    ("Елена", "Александровна"),
    ("Ольга", "Сергеевна"),
    ("Наталья", "Дмитриевна"),
    ("Татьяна", "Андреевна"),
    ("Анна", "Алексеевна"),
    ("Мария", "Максимовна"),
    ("Екатерина", "Евгеньевна"),
    ("Ирина", "Ивановна"),
    ("Светлана", "Михайловна"),
    ("Юлия", "Николаевна"),
    ("Анастасия", "Владимировна"),
    ("Марина", "Павловна"),
]
SURNAMES = [
    "Иванов",
    "Смирнов",
    "Кузнецов",
    "Попов",
    "Васильев",
    "Петров",
    "Соколов",
    "Михайлов",
    "Новиков",
    "Фёдоров",
    "Морозов",
    "Волков",
    "Алексеев",
    "Лебедев",
    "Семёнов",
    "Егоров",
    "Павлов",
    "Козлов",
    "Степанов",
    "Николаев",
    "Орлов",
    "Андреев",
    "Макаров",
    "Никитин",
]
GROUPS = [
    ("Постоянные клиенты", "Покупали больше трёх раз"),
    ("Оптовики", "Юридические лица и ИП"),
    ("Москва", "Доставка по Москве и области"),
    ("Рассылка акций", "Согласились получать рекламные SMS"),
]
# Mobile ranges of the big four operators, so the numbers are valid.
PREFIXES = ["900", "903", "905", "909", "912", "915", "916", "919", "925", "926", "977", "985"]


@transaction.atomic
def load_demo_data(count: int = 200, seed: int = 2017) -> tuple[int, int]:
    """Create ``count`` contacts (idempotent: phones are fixed by ``seed``). Returns
    (contacts created, groups created)."""
    rng = random.Random(seed)
    groups = []
    groups_created = 0
    for name, description in GROUPS:
        group, created = ContactGroup.objects.get_or_create(
            name=name, defaults={"description": description}
        )
        groups.append(group)
        groups_created += created
    existing = set(Contact.objects.values_list("phone", flat=True))
    contacts = []
    phones = set()
    while len(contacts) < count:
        phone = f"+7{rng.choice(PREFIXES)}{rng.randrange(10**7):07d}"
        if phone in phones:
            continue
        phones.add(phone)
        female = rng.random() < 0.5
        first, middle = rng.choice(FEMALE if female else MALE)
        last = rng.choice(SURNAMES) + ("а" if female else "")
        contact = Contact(
            first_name=first,
            middle_name=middle,
            last_name=last,
            phone=phone,
            email=f"client{len(contacts) + 1}@example.ru" if rng.random() < 0.6 else "",
            opted_out=rng.random() < 0.04,
            external_id=f"00-{len(contacts) + 1:06d}",
        )
        contact._demo_groups = [g for g in groups if rng.random() < 0.35]
        contacts.append(contact)
    new = [c for c in contacts if c.phone not in existing]
    for contact in new:
        contact.save()  # save() fills opted_out_at; 200 rows are quick
    through = Contact.groups.through
    through.objects.bulk_create(
        [through(contact_id=c.pk, contactgroup_id=g.pk) for c in new for g in c._demo_groups],
        ignore_conflicts=True,
    )
    return len(new), groups_created
