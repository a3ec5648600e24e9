"""Contact import speed: our bulk import against django-import-export's stock ModelResource.

    .venv/bin/python bench/import.py [--rows 100000] [--stock-rows 10000]
        [--database-url sqlite:////tmp/crm_sms_bench_import.sqlite3
                        | postgres://postgres@127.0.0.1:5432/crm_sms_bench_import]

It writes one file the way 1C or a Russian Excel does (Windows-1251, ``;``, phones like
"8 (900) 123-42-12", Russian column titles, group names), then, on a fresh database:

1. the stock resource (``class R(resources.ModelResource): class Meta: model = Contact;
   import_id_fields = ("phone",)``) imports the first ``--stock-rows`` rows of that file into an
   empty table (it is far too slow for all of them; its time is extrapolated per row). The stock
   resource needs field names as column titles and cannot take group names, so it gets the same
   rows with field-name titles and without the groups column, and stores phones as written;
   the same rows again (its update path);
2. ``crm_sms.importing.import_contacts`` imports the whole file into an empty table (create
   path: normalizes phones, creates groups and memberships), then the whole file again
   (update path: every row found by phone, nothing changed).

Prints JSON with rows, seconds, microseconds per row and the speed-up per row.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

from _setup import ROOT, recreate_database  # noqa: E402  (the bench folder)

sys.path.insert(0, str(ROOT))

HEADERS = ["Фамилия", "Имя", "Отчество", "Телефон", "Эл. почта", "Группы", "Примечание", "Код"]
FIELDS = [
    "last_name",
    "first_name",
    "middle_name",
    "phone",
    "email",
    None,  # groups: the stock resource cannot read names
    "notes",
    "external_id",
]
LAST = ["Иванов", "Петров", "Сидоров", "Смирнов", "Кузнецов", "Попов", "Васильев", "Соколов"]
FIRST = ["Иван", "Пётр", "Анна", "Мария", "Олег", "Ольга", "Сергей", "Елена"]
MIDDLE = ["Иванович", "Петровна", "Сергеевич", "Олеговна", ""]
GROUPS = ["VIP", "Опт", "Розница", "Москва", "Новые"]


def make_rows(count: int) -> list[list[str]]:
    rnd = random.Random(42)
    rows = []
    for i in range(count):
        n = 1000000 + i  # unique numbers in +7 900 1xx-xx-xx
        digits = f"{n:07d}"
        phone = f"8 (900) {digits[:3]}-{digits[3:5]}-{digits[5:]}"
        groups = "; ".join(rnd.sample(GROUPS, rnd.randint(0, 2)))
        rows.append(
            [
                rnd.choice(LAST),
                rnd.choice(FIRST),
                rnd.choice(MIDDLE),
                phone,
                f"user{i}@example.ru" if i % 3 == 0 else "",
                groups,
                "звонить после 18" if i % 7 == 0 else "",
                f"{i:08d}",
            ]
        )
    return rows


def write_1c_csv(path: Path, rows: list[list[str]]) -> None:
    with open(path, "w", encoding="cp1251", newline="") as out:
        writer = csv.writer(out, delimiter=";", lineterminator="\r\n")
        writer.writerow(HEADERS)
        writer.writerows(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--stock-rows", type=int, default=10_000)
    parser.add_argument(
        "--database-url",
        default=f"sqlite:///{Path(tempfile.gettempdir()) / 'crm_sms_bench_import.sqlite3'}",
    )
    args = parser.parse_args()

    recreate_database(args.database_url)
    os.environ["DATABASE_URL"] = args.database_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ["DEBUG"] = "0"
    os.environ.setdefault("SECRET_KEY", "bench-secret-key-not-for-production-0123456789")
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection
    from import_export import resources
    from tablib import Dataset

    from crm_sms.importing import import_contacts
    from crm_sms.models import Contact, ContactGroup

    call_command("migrate", verbosity=0)

    rows = make_rows(args.rows)
    workdir = Path(tempfile.mkdtemp(prefix="crm_sms_bench_"))
    path = workdir / "contacts_1c.csv"
    write_1c_csv(path, rows)

    class R(resources.ModelResource):
        class Meta:
            model = Contact
            import_id_fields = ("phone",)

    def stock_dataset(count: int) -> Dataset:
        # The same file, read the way import-export does (tablib), titles as field names.
        text = path.read_bytes().decode("cp1251")
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=";")
        next(reader)
        keep = [i for i, f in enumerate(FIELDS) if f]
        dataset = Dataset(headers=[FIELDS[i] for i in keep])
        for i, row in enumerate(reader):
            if i >= count:
                break
            dataset.append([row[j] for j in keep])
        return dataset

    def timed(func):
        started = time.perf_counter()
        value = func()
        return value, time.perf_counter() - started

    def clear() -> None:
        Contact.groups.through.objects.all().delete()
        Contact.objects.all().delete()
        ContactGroup.objects.all().delete()

    stock_rows = min(args.stock_rows, args.rows)
    dataset = stock_dataset(stock_rows)
    stock_create, stock_create_s = timed(
        lambda: R().import_data(dataset, dry_run=False, raise_errors=True)
    )
    assert stock_create.totals["new"] == stock_rows, stock_create.totals
    stock_update, stock_update_s = timed(
        lambda: R().import_data(dataset, dry_run=False, raise_errors=True)
    )
    clear()

    ours_create, ours_create_s = timed(lambda: import_contacts(path))
    assert ours_create.created == args.rows and ours_create.skipped == 0, ours_create.as_dict()
    memberships = Contact.groups.through.objects.count()
    ours_update, ours_update_s = timed(lambda: import_contacts(path))
    assert ours_update.unchanged == args.rows, ours_update.as_dict()

    def per_row(seconds: float, count: int) -> float:
        return round(seconds / count * 1e6, 1)

    stock_create_us = per_row(stock_create_s, stock_rows)
    stock_update_us = per_row(stock_update_s, stock_rows)
    ours_create_us = per_row(ours_create_s, args.rows)
    ours_update_us = per_row(ours_update_s, args.rows)
    result = {
        "database": connection.vendor,
        "file": {
            "rows": args.rows,
            "bytes": path.stat().st_size,
            "format": "CSV, cp1251, ';', phones like '8 (900) 100-00-00', Russian titles",
        },
        "ours": {
            "create": {
                "rows": args.rows,
                "seconds": round(ours_create_s, 2),
                "us_per_row": ours_create_us,
                "rows_per_second": round(args.rows / ours_create_s),
                "groups_created": len(ours_create.groups_created),
                "memberships": memberships,
            },
            "reimport_unchanged": {
                "rows": args.rows,
                "seconds": round(ours_update_s, 2),
                "us_per_row": ours_update_us,
            },
        },
        "stock_modelresource": {
            "rows": stock_rows,
            "extrapolated_per_row": stock_rows < args.rows,
            "note": (
                "django-import-export defaults (ModelResource, import_id_fields=('phone',)) on "
                "the first rows of the same file, titles renamed to field names, no groups "
                "column, phones stored as written (no normalization)"
            ),
            "create": {
                "seconds": round(stock_create_s, 2),
                "us_per_row": stock_create_us,
                "extrapolated_seconds_for_all_rows": round(stock_create_us * args.rows / 1e6, 1),
            },
            "reimport": {"seconds": round(stock_update_s, 2), "us_per_row": stock_update_us},
        },
        "speedup_per_row": {
            "create": round(stock_create_us / ours_create_us, 1),
            "reimport": round(stock_update_us / ours_update_us, 1),
        },
        "target": "at least 5x per row",
    }
    print(json.dumps(result, ensure_ascii=False, indent=2))
    path.unlink()
    workdir.rmdir()


if __name__ == "__main__":
    main()
