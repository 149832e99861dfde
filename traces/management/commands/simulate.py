from django.core.management.base import BaseCommand

from traces.simulator.run import add_arguments, run_from_options


class Command(BaseCommand):
    help = "Run concurrent OpenTelemetry-instrumented agents against Causeway, optionally injecting concurrency bugs."
    requires_system_checks = []

    def add_arguments(self, parser):
        add_arguments(parser)

    def handle(self, *args, **options):
        run_from_options(options, self.stdout, self.stderr)
