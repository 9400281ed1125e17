#!/usr/bin/env python3
"""An SMTP server for the tests (aiosmtpd, independent of cinta).

usage: smtp_sink.py --port PORT --dir DIR
Every message received is written to DIR as NNNN.eml, its first line the
envelope's recipients ("X-Rcpt: a, b"); prints "ready" once listening.
"""
import argparse
import os
import time

from aiosmtpd.controller import Controller


class Sink:
    def __init__(self, d):
        self.d = d
        self.n = 0

    async def handle_DATA(self, server, session, envelope):
        self.n += 1
        p = os.path.join(self.d, "%04d.eml" % self.n)
        content = envelope.content
        if isinstance(content, str):
            content = content.encode()
        with open(p + ".tmp", "wb") as f:
            f.write(("X-Rcpt: " + ", ".join(envelope.rcpt_tos) + "\r\n").encode())
            f.write(content)
        os.rename(p + ".tmp", p)
        return "250 OK"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--dir", required=True)
    a = ap.parse_args()
    c = Controller(Sink(a.dir), hostname="127.0.0.1", port=a.port)
    c.start()
    print("ready", flush=True)
    try:
        while True:
            time.sleep(3600)
    finally:
        c.stop()


if __name__ == "__main__":
    main()
