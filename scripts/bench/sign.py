#!/usr/bin/env python3
"""Writes N distinct Slack slash-command requests, signed like Slack (v0: HMAC-SHA256 over
"v0:{timestamp}:{body}" with the signing secret), one "timestamp<TAB>signature<TAB>body" line
each, for scripts/bench/slack-commands.lua.

usage: sign.py SECRET_FILE OUT_FILE N USER_ID CHANNEL_ID TEXT [RESPONSE_URL_BASE]

With RESPONSE_URL_BASE each command carries a response_url under it, one per command like
Slack's (`{base}/commands/T0BENCH/{k}/bench`), where runbot posts its reply. BENCH_TAG (env)
goes into every trigger_id, so requests signed for different phases never share one (runbot
acts on a trigger_id once: a repeated one is a duplicate delivery).
"""
import hashlib
import hmac
import os
import sys
import time
import urllib.parse


def main() -> None:
    secret_file, out, n, user, channel, text = sys.argv[1:7]
    response_base = sys.argv[7] if len(sys.argv) > 7 else ""
    secret = open(secret_file, "rb").read().strip()
    ts = str(int(time.time()))
    tag = os.environ.get("BENCH_TAG", "")
    with open(out, "w") as f:
        for k in range(int(n)):
            fields = {
                "token": "bench",
                "team_id": "T0BENCH",
                "team_domain": "bench",
                "channel_id": channel,
                "channel_name": "bench",
                "user_id": user,
                "user_name": "bench",
                "command": "/ops",
                "text": text,
                "api_app_id": "A0BENCH",
                "trigger_id": f"{ts}.{k}.bench{tag}{k:07d}",
            }
            if response_base:
                fields["response_url"] = f"{response_base.rstrip('/')}/commands/T0BENCH/{k}/bench"
            body = urllib.parse.urlencode(fields)
            mac = hmac.new(secret, f"v0:{ts}:{body}".encode(), hashlib.sha256).hexdigest()
            f.write(f"{ts}\tv0={mac}\t{body}\n")


if __name__ == "__main__":
    main()
