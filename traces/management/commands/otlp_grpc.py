import signal
import threading

from django.core.management.base import BaseCommand

from traces.grpc_receiver import build_server


class Command(BaseCommand):
    help = "Run the OTLP/gRPC trace receiver (TraceService.Export) on the same ingest code as POST /v1/traces."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 for every interface)")
        parser.add_argument("--port", type=int, default=4317)
        parser.add_argument("--workers", type=int, default=8, help="threads handling Export calls")
        parser.add_argument("--grace", type=float, default=10.0, help="seconds to finish calls in flight on shutdown")

    def handle(self, *args, host, port, workers, grace, **options):
        server, bound = build_server(host, port, workers)
        server.start()
        self.stdout.write(f"OTLP/gRPC receiver listening on {host}:{bound} with {workers} workers")
        stopping = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stopping.set())
        stopping.wait()
        self.stdout.write("stopping: finishing calls in flight")
        server.stop(grace).wait()
