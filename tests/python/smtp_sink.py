#!/usr/bin/env python3
"""An SMTP server for the tests (aiosmtpd, independent of cinta).

usage: smtp_sink.py --port PORT --dir DIR [--cert C --key K] [--user U --password P]
Every message received is written to DIR as NNNN.eml, its first lines the
envelope's recipients ("X-Rcpt: a, b") and the login it came under
("X-Auth: user", or "-"); prints "ready" once listening. With --cert and
--key it requires STARTTLS; with --user and --password, AUTH as that user.
"""
import argparse
import os
import ssl
import time

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult


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
        login = session.auth_data.login.decode() if session.auth_data else "-"
        with open(p + ".tmp", "wb") as f:
            f.write(("X-Rcpt: " + ", ".join(envelope.rcpt_tos) + "\r\n").encode())
            f.write(("X-Auth: " + login + "\r\n").encode())
            f.write(content)
        os.rename(p + ".tmp", p)
        return "250 OK"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--user")
    ap.add_argument("--password")
    a = ap.parse_args()
    kw = {}
    if a.cert:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(a.cert, a.key)
        kw.update(tls_context=ctx, require_starttls=True)
    if a.user:
        def check(server, session, envelope, mechanism, auth_data):
            ok = auth_data.login.decode() == a.user and auth_data.password.decode() == a.password
            return AuthResult(success=ok, auth_data=auth_data)
        kw.update(authenticator=check, auth_required=True, auth_require_tls=True)
    c = Controller(Sink(a.dir), hostname="127.0.0.1", port=a.port, **kw)
    c.start()
    print("ready", flush=True)
    try:
        while True:
            time.sleep(3600)
    finally:
        c.stop()


if __name__ == "__main__":
    main()
