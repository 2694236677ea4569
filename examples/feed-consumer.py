#!/usr/bin/env python3
"""A minimal consumer of Gavel's event feed: verifies Standard Webhooks signatures and
handles each CloudEvent once (deduplicated by id). Usage:
    GAVEL_EVENTS_SECRET=whsec_... python3 feed-consumer.py [port]"""
import base64, hashlib, hmac, http.server, json, os, sys, time

KEY = base64.b64decode(os.environ["GAVEL_EVENTS_SECRET"].removeprefix("whsec_"))
seen = set()  # in production: a table, written with the event's effects


def valid(headers, body):
    msg_id, ts = headers.get("webhook-id", ""), headers.get("webhook-timestamp", "0")
    if abs(time.time() - int(ts)) > 300:  # refuse replays of old requests
        return False
    mac = hmac.new(KEY, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()
    expected = "v1," + base64.b64encode(mac).decode()
    return any(hmac.compare_digest(expected, sig)
               for sig in headers.get("webhook-signature", "").split(" "))


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        if not valid(self.headers, body):
            self.send_response(401)
        else:
            event = json.loads(body)
            if event["id"] not in seen:
                seen.add(event["id"])
                print(event["time"], event["type"], event["subject"], json.dumps(event["data"]), flush=True)
            self.send_response(204)  # a duplicate is acknowledged too
        self.end_headers()

    def log_message(self, *args):
        pass


port = int(sys.argv[1]) if len(sys.argv) > 1 else 9000
http.server.HTTPServer(("127.0.0.1", port), Handler).serve_forever()
