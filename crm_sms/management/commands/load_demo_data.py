from django.core.management.base import BaseCommand

from crm_sms.demo import load_demo_data


class Command(BaseCommand):
    help = "Create about 200 realistic Russian demo contacts in a few groups (idempotent)."

    def add_arguments(self, parser):
        parser.add_argument("--count", type=int, default=200)

    def handle(self, *args, count: int, **options):
        contacts, groups = load_demo_data(count=count)
        self.stdout.write(f"Demo data: {contacts} contacts and {groups} groups created.")
