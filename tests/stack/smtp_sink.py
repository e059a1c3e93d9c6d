#!/usr/bin/python3
"""SMTP sink for tests/stack_e2e.rs (Debian package python3-aiosmtpd).

    /usr/bin/python3 tests/stack/smtp_sink.py HOST PORT DIR

Accepts every message on HOST:PORT and writes it to DIR as NNNN.eml (raw)
and NNNN.txt (decoded: Subject, From, To, then every text/* part with its
transfer encoding undone), each written to a temporary name and renamed, so a
reader never sees half a message. Prints "ready" once it listens. Stops on
SIGTERM/SIGINT.
"""

import email
import email.policy
import itertools
import os
import signal
import sys
import threading

from aiosmtpd.controller import Controller


class Sink:
    def __init__(self, directory):
        self.directory = directory
        self.counter = itertools.count(1)
        self.lock = threading.Lock()

    def write(self, name, data):
        path = os.path.join(self.directory, name)
        with open(path + ".tmp", "wb") as f:
            f.write(data)
        os.rename(path + ".tmp", path)

    async def handle_DATA(self, server, session, envelope):
        raw = envelope.original_content or envelope.content
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        lines = [
            f"Subject: {msg.get('Subject', '')}",
            f"From: {msg.get('From', '')}",
            f"To: {msg.get('To', '')}",
            f"Envelope-To: {', '.join(envelope.rcpt_tos)}",
            "",
        ]
        for part in msg.walk():
            if part.get_content_maintype() == "text":
                lines.append(f"--- {part.get_content_type()}")
                lines.append(part.get_content())
        with self.lock:
            n = next(self.counter)
        self.write(f"{n:04d}.eml", raw)
        self.write(f"{n:04d}.txt", "\n".join(lines).encode("utf-8"))
        return "250 Message accepted for delivery"


def main():
    host, port, directory = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    os.makedirs(directory, exist_ok=True)
    controller = Controller(Sink(directory), hostname=host, port=port)
    controller.start()
    print("ready", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    while not stop.wait(0.5):
        pass
    controller.stop()


if __name__ == "__main__":
    main()
