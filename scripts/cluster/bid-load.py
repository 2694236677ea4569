#!/usr/bin/env python3
"""Bounded bid load over Gavel's WebSocket protocol (stdlib only), for the real-cluster suite.

usage: bid-load.py WS_URL NAMESPACE/NAME SECONDS BIDDERS OUT.json

BIDDERS threads each hold a connection to WS_URL (a Service address: a pod that goes away is
replaced by another behind it) with development auth (?bidder=load-<i>) and bid the auction's
minimum next amount, one bid in flight at a time, for SECONDS. A connection that breaks is
re-opened after 100 ms (counted as a reconnect). Every acknowledged public bid (`bid_result`;
a leader's re-bid, `ceiling_raised`, is a private raise without a bid of its own) is written to OUT.json as {"seq", "bidder", "amount"} so the caller can check that each is in
PostgreSQL exactly once. Sends only to WS_URL; stops by itself, or earlier on SIGTERM (each
client finishes the bid in flight, then OUT.json is written as at the end).
"""
import base64
import json
import os
import signal
import socket
import struct
import sys
import threading
import time
from urllib.parse import quote, urlsplit


def send_frame(sock, opcode, payload):
    """One masked WebSocket frame (RFC 6455 section 5.2), as a client must send it."""
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 1 << 16:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))


def recv_exact(f, n):
    data = f.read(n)
    if len(data) != n:
        raise EOFError("connection closed")
    return data


def recv_frame(f):
    """(opcode, payload) of the next frame from the server."""
    b0, b1 = recv_exact(f, 2)
    n = b1 & 0x7F
    if n == 126:
        (n,) = struct.unpack("!H", recv_exact(f, 2))
    elif n == 127:
        (n,) = struct.unpack("!Q", recv_exact(f, 8))
    mask = recv_exact(f, 4) if b1 & 0x80 else None
    data = recv_exact(f, n)
    if mask:
        data = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
    return b0 & 0x0F, data


def connect(url, bidder):
    u = urlsplit(url)
    sock = socket.create_connection((u.hostname, u.port or 80), timeout=5)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET {u.path}?bidder={quote(bidder)} HTTP/1.1\r\nHost: {u.hostname}\r\n"
            f"Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    f = sock.makefile("rb")
    if b" 101 " not in f.readline():
        sock.close()
        raise ConnectionError("upgrade refused")
    while f.readline() not in (b"\r\n", b""):
        pass
    return sock, f


def main():
    url, auction, seconds, bidders, out = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    end = [time.monotonic() + seconds]

    def deadline_passed():
        return time.monotonic() >= end[0]

    # SIGTERM ends the load early (the caller decides how long it lasts).
    signal.signal(signal.SIGTERM, lambda *_: end.__setitem__(0, time.monotonic()))
    lock = threading.Lock()
    state = {"next": 1, "acks": [], "reconnects": 0, "rejected": 0, "raises": 0}

    def run(i):
        bidder = f"load-{i}"
        n = 0
        while not deadline_passed():
            try:
                sock, f = connect(url, bidder)
            except OSError:
                with lock:
                    state["reconnects"] += 1
                time.sleep(0.1)
                continue
            try:
                while not deadline_passed():
                    with lock:
                        amount = state["next"]
                    n += 1
                    ref = f"{bidder}-{n}"
                    send_frame(sock, 0x1, json.dumps({"type": "bid", "auction": auction, "amount": amount, "ref": ref}).encode())
                    while True:
                        opcode, data = recv_frame(f)
                        if opcode == 0x8:
                            raise EOFError("closed by the server")
                        if opcode != 0x1:
                            continue
                        msg = json.loads(data)
                        if msg.get("ref") != ref:
                            continue
                        with lock:
                            if msg.get("min_next"):
                                state["next"] = max(state["next"], msg["min_next"])
                            if msg["type"] == "bid_result" and msg.get("outcome") == "ceiling_raised":
                                # The leader's own re-bid: a private raise of its ceiling,
                                # no public bid of its own (its seq is the last public one).
                                state["raises"] += 1
                            elif msg["type"] == "bid_result":
                                state["acks"].append({"seq": msg["seq"], "bidder": bidder, "amount": amount})
                            else:
                                state["rejected"] += 1
                        if msg["type"] != "bid_result":
                            time.sleep(0.01)  # outbid by another client: bounded, not a spin
                        break
            except (OSError, EOFError, ValueError):
                with lock:
                    state["reconnects"] += 1
                time.sleep(0.1)
            finally:
                sock.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(bidders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with open(out, "w") as fh:
        json.dump(state, fh)
    print(f"bid-load: {len(state['acks'])} acknowledged, {state['rejected']} refused, {state['raises']} private ceiling raises, {state['reconnects']} reconnects")


if __name__ == "__main__":
    main()
