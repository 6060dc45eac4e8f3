"""A real SMTP server for clinicbook's tests (aiosmtpd).

Usage: server.py OUT_DIR PORT [FAIL_FIRST]

Listens on 127.0.0.1:PORT, answers the first FAIL_FIRST messages with a
temporary failure (451), and writes every accepted message to OUT_DIR as
NNNNN.eml (the raw bytes as received) and NNNNN.json (the envelope and the
message as Python's email package decodes it: subject, headers, text and
HTML bodies and each part's Content-Transfer-Encoding). The .json file is
renamed into place last, so a reader that sees it sees both. Prints READY
once listening; stops when its stdin closes.
"""

import email
import email.policy
import json
import os
import sys

from aiosmtpd.controller import Controller


class Handler:
    def __init__(self, out, fail_first):
        self.out = out
        self.fail_first = fail_first
        self.refused = 0
        self.accepted = 0

    async def handle_DATA(self, server, session, envelope):
        if self.refused < self.fail_first:
            self.refused += 1
            return "451 4.3.0 test server: try again later"
        self.accepted += 1
        base = os.path.join(self.out, "%05d" % self.accepted)
        raw = envelope.original_content or envelope.content
        with open(base + ".eml", "wb") as f:
            f.write(raw)
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        text = msg.get_body(("plain",))
        html = msg.get_body(("html",))
        decoded = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "subject": str(msg["subject"] or ""),
            "from": str(msg["from"] or ""),
            "to": str(msg["to"] or ""),
            "message_id": str(msg["message-id"] or ""),
            "content_language": str(msg["content-language"] or ""),
            "text": text.get_content() if text is not None else None,
            "html": html.get_content() if html is not None else None,
            "transfer_encodings": [
                str(part.get("content-transfer-encoding", ""))
                for part in msg.walk()
                if not part.is_multipart()
            ],
            "raw": raw.decode("ascii", errors="replace"),
        }
        with open(base + ".json.tmp", "w", encoding="utf-8") as f:
            json.dump(decoded, f, ensure_ascii=False)
        os.rename(base + ".json.tmp", base + ".json")
        return "250 OK"


def main():
    out, port = sys.argv[1], int(sys.argv[2])
    fail_first = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    controller = Controller(Handler(out, fail_first), hostname="127.0.0.1", port=port)
    controller.start()
    print("READY", flush=True)
    try:
        sys.stdin.read()
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
