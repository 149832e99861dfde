from datetime import timedelta

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from governance.services import api_token_create


class Command(BaseCommand):
    help = ("Create an API token for USER (send it as `Authorization: Token <token>`); prints the token alone, "
            "once: only its digest is stored.")

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--expires-days", type=int, default=None,
                            help="the token stops working after this many days (default: never)")

    def handle(self, *args, username, expires_days, **options):
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"no user {username!r}")
        if expires_days is not None and expires_days < 1:
            raise CommandError("--expires-days must be at least 1")
        expires_in = timedelta(days=expires_days) if expires_days else None
        self.stdout.write(api_token_create(user=user, expires_in=expires_in))
