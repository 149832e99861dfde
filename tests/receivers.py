"""A real local HTTP server that receives webhooks, as an Alertmanager receiver would."""

from __future__ import annotations

import json
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TIMEOUT = "timeout"  # an answer: hold the request for `hold_seconds`, then drop the connection unanswered


class Receiver:
    def __init__(self, url: str):
        self.url = url
        self.received: list[dict] = []  # JSON bodies accepted (answered 200), in arrival order
        self.answers: list[int | str] = []  # statuses (or TIMEOUT) to answer next, in order; then 200
        self.answered: list[int | str] = []  # what every request was answered, in arrival order
        # Statuses (or TIMEOUT) every distinct notification is answered first, in order, before `answers` apply:
        # a receiver that fails each message a few times, however the sender interleaves them.
        self.each_message: list[int | str] = []
        self.tries: dict[str, int] = {}  # requests seen per distinct notification (message_key)
        self.hold_seconds = 3.0
        self.lock = threading.Lock()

    def answer(self, payload: dict) -> int | str:
        key = message_key(payload)
        tried = self.tries[key] = self.tries.get(key, 0) + 1
        if tried <= len(self.each_message):
            return self.each_message[tried - 1]
        return self.answers.pop(0) if self.answers else 200


def message_key(payload: dict) -> str:
    """One notification's identity in an Alertmanager payload: its group and the alerts' fingerprints and states."""
    return json.dumps([payload.get("groupKey"), [(a.get("fingerprint"), a.get("status")) for a in payload["alerts"]]])


@contextmanager
def webhook_receiver():
    """A Receiver listening on 127.0.0.1 until the block ends."""
    receiver: Receiver

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with receiver.lock:
                payload = json.loads(body)
                status = receiver.answer(payload)
                receiver.answered.append(status)
                if status == 200:
                    receiver.received.append(payload)
            if status == TIMEOUT:
                time.sleep(receiver.hold_seconds)  # the sender gave up waiting; nothing was taken
                self.close_connection = True
                return
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(b"ok" if status == 200 else b"receiver says no")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver = Receiver(f"http://127.0.0.1:{server.server_address[1]}/hook")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
