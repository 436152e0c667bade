#!/usr/bin/env python3
"""A real SMTP server on loopback for the tests (Debian's python3-aiosmtpd).

Usage: smtp_sink.py DIR [--auth-user USER]   (password in $SMTP_SINK_PASSWORD)

Listens on 127.0.0.1 on a free port and prints "listening on PORT" once it
accepts connections. Each delivered message is written to DIR as
NNNN.json ({"from", "to", "subject", "body"}: the decoded text body) and
NNNN.eml (as received), the JSON last and atomically (written aside, then
renamed), so a reader never sees half a message. With --auth-user, AUTH
PLAIN/LOGIN is required (over plain text: this is a loopback test server)
and only that user with that password is accepted.
"""

import argparse
import asyncio
import email
import email.policy
import json
import logging
import os
import sys
import warnings

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


class Sink:
    def __init__(self, directory):
        self.directory = directory
        self.count = 0

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        base = os.path.join(self.directory, "%04d" % self.count)
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        part = message.get_body(preferencelist=("plain",))
        record = {
            "from": envelope.mail_from,
            "to": envelope.rcpt_tos,
            "subject": str(message["subject"] or ""),
            "body": part.get_content() if part is not None else "",
        }
        with open(base + ".eml", "wb") as raw:
            raw.write(envelope.original_content or envelope.content)
        with open(base + ".json.tmp", "w", encoding="utf-8") as out:
            json.dump(record, out)
        os.rename(base + ".json.tmp", base + ".json")
        return "250 OK delivered as %04d" % self.count


def main():
    # Plain-text AUTH is the point of this loopback server: no warnings.
    warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS")
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    parser = argparse.ArgumentParser()
    parser.add_argument("directory")
    parser.add_argument("--auth-user")
    args = parser.parse_args()
    password = os.environ.get("SMTP_SINK_PASSWORD", "")

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login.decode() == args.auth_user
            and auth_data.password.decode() == password
        )
        return AuthResult(success=ok)

    sink = Sink(args.directory)
    options = {}
    if args.auth_user:
        options = dict(
            authenticator=authenticator, auth_required=True, auth_require_tls=False
        )

    async def serve():
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: SMTP(sink, hostname="sink.test", **options), "127.0.0.1", 0
        )
        port = server.sockets[0].getsockname()[1]
        print("listening on %d" % port, flush=True)
        await server.serve_forever()

    asyncio.run(serve())


if __name__ == "__main__":
    sys.exit(main())
