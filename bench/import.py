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

``--part safety`` (``all`` runs both) measures what hostile and big files cost, each case in a
child process of its own so that its peak memory (``ru_maxrss``) is its own:

- ``dimension_bomb``: a 5 KB XLSX claiming ``A1:XFD1048576`` with a formatted cell in the last
  row (before the fix: 17 billion cells, minutes); the cells openpyxl handed over are counted;
- ``zip_bomb``: a ~500 KB XLSX whose sheet unpacks to 150 MB: refused, bytes unpacked counted;
  ``zip_bomb_allowed``: the same with the compression-ratio guard off (the row limit ends it);
- ``big_csv_*``: a ``--csv-mb`` (50) MB CSV like the one above: what the admin's request reads
  (the first ``IMPORT_IN_REQUEST_ROWS`` rows), the background check and import jobs (batches
  committed with their progress), and the one-transaction import of ``import_contacts``.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import random
import re
import resource
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from _setup import ROOT, recreate_database  # noqa: E402  (the bench folder)

sys.path.insert(0, str(ROOT))
BENCH_SECRET_KEY = "bench-secret-key-not-for-production-0123456789-abcdefghij"

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


def setup_django(database_url: str) -> None:
    os.environ["DATABASE_URL"] = database_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ["DEBUG"] = "0"
    os.environ.setdefault("SECRET_KEY", BENCH_SECRET_KEY)
    import django

    django.setup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--stock-rows", type=int, default=10_000)
    parser.add_argument(
        "--database-url",
        default=f"sqlite:///{Path(tempfile.gettempdir()) / 'crm_sms_bench_import.sqlite3'}",
    )
    parser.add_argument("--part", choices=["speed", "safety", "all"], default="speed")
    parser.add_argument("--csv-mb", type=int, default=50, help="the big CSV of --part safety")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # a child process: one safety case
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        setup_django(args.database_url)
        print(json.dumps(run_case(args.case, Path(args.workdir))))
        return
    recreate_database(args.database_url)
    setup_django(args.database_url)
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    result = {}
    if args.part in ("speed", "all"):
        result["speed"] = speed(args)
    if args.part in ("safety", "all"):
        result["safety"] = safety(args)
    print(json.dumps(result, ensure_ascii=False, indent=2))


def speed(args: argparse.Namespace) -> dict:
    """Our import against the stock ModelResource (see the module docstring)."""
    from django.db import connection
    from import_export import resources
    from tablib import Dataset

    from crm_sms.importing import import_contacts
    from crm_sms.models import Contact, ContactGroup

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
    path.unlink()
    workdir.rmdir()
    clear()
    return result


# --- safety: hostile and big files, one child process per case ------------------------------

SAFETY_CASES = [
    "baseline",
    "dimension_bomb",
    "zip_bomb",
    "zip_bomb_allowed",
    "big_csv_request",
    "big_csv_check_job",
    "big_csv_import_job",
    "clear",
    "big_csv_command",
]
SHEET = "xl/worksheets/sheet1.xml"


def safety(args: argparse.Namespace) -> dict:
    """Build the files, run each case in a child process, collect its figures."""
    workdir = Path(tempfile.mkdtemp(prefix="crm_sms_bench_safety_"))
    files = build_safety_files(workdir, args.csv_mb)
    figures: dict = {"files": files}
    for case in SAFETY_CASES:
        child = subprocess.run(
            [sys.executable, __file__, "--case", case, "--workdir", str(workdir)]
            + ["--database-url", args.database_url],
            capture_output=True,
            text=True,
            timeout=1800,
            env={**os.environ, "SECRET_KEY": BENCH_SECRET_KEY},
        )
        if child.returncode:
            figures[case] = {"error": child.stderr[-2000:]}
        elif case != "clear":
            figures[case] = json.loads(child.stdout.strip().splitlines()[-1])
    for path in workdir.iterdir():
        path.unlink()
    workdir.rmdir()
    return figures


def build_safety_files(workdir: Path, csv_mb: int) -> dict:
    """The dimension bomb, the zip bomb and the big CSV in ``workdir``; their sizes."""
    import openpyxl

    book = openpyxl.Workbook()
    for row in [["Фамилия", "Телефон", "Группы"], ["Иванов", "8 (900) 123-42-12", "VIP"]]:
        book.active.append(row)
    small = io.BytesIO()
    book.save(small)

    def edit_sheet(target: Path, edit) -> None:
        with zipfile.ZipFile(small) as source, zipfile.ZipFile(target, "w") as out:
            for info in source.infolist():
                if info.filename != SHEET:
                    out.writestr(info, source.read(info), compress_type=zipfile.ZIP_DEFLATED)
                    continue
                part = zipfile.ZipInfo(SHEET, date_time=info.date_time)
                part.compress_type = zipfile.ZIP_DEFLATED
                with out.open(part, "w", force_zip64=True) as sheet:
                    edit(source.read(info).decode(), sheet)

    def claim_everything(xml: str, sheet) -> None:
        xml = re.sub(r"<dimension [^>]*/>", '<dimension ref="A1:XFD1048576"/>', xml)
        last = '<row r="1048576"><c r="A1048576" s="0"/></row>'
        sheet.write(xml.replace("</sheetData>", last + "</sheetData>").encode())

    def unpack_to_150_mb(xml: str, sheet) -> None:
        head, tail = re.sub(r"<dimension [^>]*/>", "", xml).split("</sheetData>")
        row = '<row><c t="inlineStr"><is><t>Иванов</t></is></c><c><v>79001234212</v></c></row>'
        chunk = (row * 10_000).encode()
        sheet.write(head.encode())
        for _ in range(150 * 1024 * 1024 // len(chunk)):
            sheet.write(chunk)
        sheet.write(("</sheetData>" + tail).encode())

    edit_sheet(workdir / "dimension_bomb.xlsx", claim_everything)
    edit_sheet(workdir / "zip_bomb.xlsx", unpack_to_150_mb)
    rows = make_rows(csv_mb * 1024 * 1024 // 67)  # ~67 bytes a row in cp1251
    write_1c_csv(workdir / "big.csv", rows)
    with zipfile.ZipFile(workdir / "zip_bomb.xlsx") as bomb:
        unpacked = sum(part.file_size for part in bomb.infolist())
    return {
        "dimension_bomb_bytes": (workdir / "dimension_bomb.xlsx").stat().st_size,
        "zip_bomb_bytes": (workdir / "zip_bomb.xlsx").stat().st_size,
        "zip_bomb_unpacked_bytes": unpacked,
        "big_csv_bytes": (workdir / "big.csv").stat().st_size,
        "big_csv_rows": len(rows),
    }


def count_work() -> dict:
    """Count the cells openpyxl hands over and the bytes unpacked from ZIP archives."""
    from openpyxl.worksheet._read_only import ReadOnlyWorksheet

    counters = {"cells_read": 0, "bytes_unpacked": 0}
    cells_by_row = ReadOnlyWorksheet._cells_by_row

    def counting_rows(self, *args, **kwargs):
        for row in cells_by_row(self, *args, **kwargs):
            counters["cells_read"] += len(row)
            yield row

    def counting_read(method):
        def read(self, *args, **kwargs):
            data = method(self, *args, **kwargs)
            counters["bytes_unpacked"] += len(data)
            return data

        return read

    ReadOnlyWorksheet._cells_by_row = counting_rows
    zipfile.ZipExtFile.read = counting_read(zipfile.ZipExtFile.read)
    zipfile.ZipExtFile.read1 = counting_read(zipfile.ZipExtFile.read1)
    return counters


def run_case(case: str, workdir: Path) -> dict:
    """One safety case, in this (child) process: seconds, peak RSS and what happened."""
    from django.core.exceptions import ValidationError
    from django.test.utils import override_settings

    from crm_sms.importing import import_contacts
    from crm_sms.importing.limits import import_setting

    counters = count_work()
    big = workdir / "big.csv"
    started = time.perf_counter()
    outcome: dict = {}
    try:
        if case == "dimension_bomb":
            outcome = brief(import_contacts(workdir / "dimension_bomb.xlsx"))
        elif case == "zip_bomb":
            import_contacts(workdir / "zip_bomb.xlsx", dry_run=True)
        elif case == "zip_bomb_allowed":
            with override_settings(CRM_SMS={"IMPORT_MAX_COMPRESSION_RATIO": 10**9}):
                import_contacts(workdir / "zip_bomb.xlsx", dry_run=True)
        elif case == "big_csv_request":
            rows = int(import_setting("IMPORT_IN_REQUEST_ROWS"))
            outcome = brief(import_contacts(big, dry_run=True, preview_rows=rows))
        elif case in ("big_csv_check_job", "big_csv_import_job"):
            outcome = run_job_case(big, dry_run=case == "big_csv_check_job")
        elif case == "clear":
            from django.db import connection

            from crm_sms.models import Contact, ContactGroup

            with connection.cursor() as cursor:
                for model in (Contact.groups.through, Contact, ContactGroup):
                    cursor.execute(f"DELETE FROM {model._meta.db_table}")
        elif case == "big_csv_command":
            outcome = brief(import_contacts(big))
    except ValidationError as exc:
        outcome = {"refused": exc.code, "message": exc.messages[0]}
    seconds = time.perf_counter() - started
    return {"seconds": round(seconds, 2), "peak_rss_mb": peak_rss_mb(), **counters, **outcome}


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM: ``ru_maxrss`` would include the parent's
    before the exec)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def run_job_case(big: Path, dry_run: bool) -> dict:
    """A background job over a copy of ``big``, run in this process as a worker runs it."""
    from crm_sms.importing import jobs

    _token, path = jobs.save_upload([big.read_bytes()])
    job = jobs.queue_job(path, filename="big.csv", options={}, dry_run=dry_run)
    job = jobs.run_job(jobs.claim_job(job.pk))
    path.unlink(missing_ok=True)
    return {"status": job.status, "rows": job.rows, "created": job.created, "error": job.error}


def brief(result) -> dict:
    return {
        "rows": result.rows,
        "created": result.created,
        "unchanged": result.unchanged,
        "skipped": result.skipped,
        "complete": result.complete,
    }


if __name__ == "__main__":
    main()
