#!/usr/bin/env python3
"""A broadcast tried as a user would: against a running bot (`NOTIFY_API_KEY=… cargo run
--release`, every other setting at its default), with a Connector stand-in on loopback that
answers every send after a delay (Teams answers in 100–300 ms).

1. Registers N Teams personal chats of one tenant (one `message` activity each, as the
   Emulator protocol delivers them), and a few of another tenant.
2. Sends one `POST /api/notify {"all": true, "tenantId": …}` and, while it drains, 20 urgent
   notify calls to conversations of the other tenant.
3. Prints the drain time against the floor (N / 50 a second), the peak sends in any second,
   duplicates, lost, the urgent calls' time to the channel (median, worst), and — when the
   bot's log is given (`--log`, the runner's stderr) — queue receives per notification, from
   its "delivery batch processed" lines.

Usage: scripts/broadcast_trial.py --bot http://127.0.0.1:3978 --key KEY [--recipients 1000]
       [--delay-ms 100] [--port 3979] [--log bot.log]
Standard library only.
"""

import argparse
import json
import re
import statistics
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TENANT = "tenant-trial"
OTHER = "tenant-other"
lock = threading.Lock()
sends = []  # (arrival monotonic, conversation id, text)


class Connector(BaseHTTPRequestHandler):
    delay = 0.1

    def do_POST(self):
        arrived = time.monotonic()
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        # /v3/conversations/{id}/activities[/{replyTo}]
        parts = self.path.split("/")
        conversation = urllib.request.unquote(parts[3]) if len(parts) > 3 else ""
        try:
            text = json.loads(body).get("text", "")
        except ValueError:
            text = ""
        with lock:
            sends.append((arrived, conversation, text))
        time.sleep(self.delay)
        answer = json.dumps({"id": f"a{len(sends)}"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    do_PUT = do_POST

    def log_message(self, *args):
        pass


def post(url, payload, key=None):
    data = json.dumps(payload).encode()
    request = urllib.request.Request(url, data=data, method="POST")
    request.add_header("Content-Type", "application/json")
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    with urllib.request.urlopen(request, timeout=30) as answer:
        return answer.status, answer.read()


def activity(conversation, tenant, service_url):
    return {
        "type": "message",
        "id": f"m-{conversation}",
        "channelId": "msteams",
        "serviceUrl": service_url,
        "from": {"id": f"user-{conversation}", "name": "User"},
        "recipient": {"id": "bot", "name": "Bot"},
        "conversation": {"id": conversation, "conversationType": "personal", "tenantId": tenant},
        "channelData": {"tenant": {"id": tenant}},
        "text": "help",
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bot", default="http://127.0.0.1:3978")
    parser.add_argument("--key", required=True)
    parser.add_argument("--recipients", type=int, default=1000)
    parser.add_argument("--delay-ms", type=int, default=100)
    parser.add_argument("--port", type=int, default=3979)
    parser.add_argument("--log", help="the bot's log, for queue receives per notification")
    parser.add_argument("--prefix", default="trial", help="conversation id prefix (one per run)")
    args = parser.parse_args()

    Connector.delay = args.delay_ms / 1000
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Connector)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    service_url = f"http://127.0.0.1:{args.port}/"

    recipients = [f"{args.prefix}-{n:05}" for n in range(args.recipients)]
    others = [f"{args.prefix}-other-{n}" for n in range(5)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda c: post(f"{args.bot}/api/messages", activity(c, TENANT, service_url)), recipients))
        list(pool.map(lambda c: post(f"{args.bot}/api/messages", activity(c, OTHER, service_url)), others))
    # Past the quiet period after each conversation's last message (QUIET_SECONDS, 5).
    time.sleep(6)
    with lock:
        sends.clear()
    log_start = 0
    if args.log:
        with open(args.log, "rb") as log:
            log_start = len(log.read())

    started = time.monotonic()
    status, answer = post(f"{args.bot}/api/notify", {"all": True, "tenantId": TENANT, "text": "maintenance tonight"}, args.key)
    assert status == 202, (status, answer)
    floor = args.recipients / 50
    urgent = []

    def probe():
        time.sleep(1)
        for k in range(20):
            at = time.monotonic()
            post(f"{args.bot}/api/notify", {"conversationId": others[k % 5], "text": f"urgent {k}"}, args.key)
            urgent.append((k, at))
            time.sleep(floor * 0.8 / 20)

    prober = threading.Thread(target=probe)
    prober.start()
    wanted = set(recipients)
    while True:
        with lock:
            reached = {c for _, c, _ in sends if c in wanted}
        if len(reached) >= len(wanted) or time.monotonic() - started > floor * 10 + 60:
            break
        time.sleep(0.2)
    prober.join()
    time.sleep(3)

    with lock:
        broadcast = [(t, c) for t, c, _ in sends if c in wanted]
        texts = {text: t for t, c, text in sends if c in others}
    drained = max(t for t, _ in broadcast) - started
    per_second = {}
    for t, _ in broadcast:
        per_second[int(t - started)] = per_second.get(int(t - started), 0) + 1
    counts = {}
    for _, c in broadcast:
        counts[c] = counts.get(c, 0) + 1
    latencies = sorted(texts[f"urgent {k}"] - at for k, at in urgent if f"urgent {k}" in texts)
    print(f"recipients {args.recipients}, Connector answering after {args.delay_ms} ms")
    print(f"  drained in        {drained:7.2f} s   ({drained / floor:.3f} x the floor of {floor:.0f} s)")
    print(f"  peak sends/s      {max(per_second.values()):7d}")
    print(f"  lost              {len(wanted) - len(counts):7d}")
    print(f"  duplicates        {sum(n - 1 for n in counts.values()):7d}")
    if latencies:
        print(f"  urgent, other tenant: median {statistics.median(latencies):.3f} s, worst {latencies[-1]:.3f} s of {len(latencies)}")
    if args.log:
        with open(args.log, "rb") as log:
            text = log.read()[log_start:].decode("utf-8", "replace")
        text = re.sub(r"\x1b\[[0-9;]*m", "", text)  # the terminal's colours
        records = sum(int(n) for n in re.findall(r'batch processed.*?records[=":]+\s*(\d+)', text))
        print(f"  queue receives    {records / (args.recipients + 20):7.3f} per notification ({records} records)")


if __name__ == "__main__":
    main()
