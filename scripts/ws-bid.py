#!/usr/bin/env python3
"""Places one bid over Gavel's WebSocket protocol v1 and prints the reply (stdlib only).

usage: ws-bid.py ws://127.0.0.1:8080/v1/ws NAMESPACE/NAME BIDDER AMOUNT

Connects with development auth (`?bidder=BIDDER`), sends
{"type": "bid", "auction": ..., "amount": AMOUNT, "ref": "ws-bid"} and prints the
`bid_result` or `bid_rejected` frame answering it. Exits 0 on `bid_result`, 1 otherwise.
Used by scripts/e2e-kind.sh, where no other WebSocket client can be assumed.
"""
import base64
import json
import os
import socket
import struct
import sys
from urllib.parse import quote, urlsplit


def send_frame(sock, opcode, payload):
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


def main():
    url, auction, bidder, amount = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    u = urlsplit(url)
    sock = socket.create_connection((u.hostname, u.port or 80), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    path = f"{u.path or '/'}?bidder={quote(bidder)}"
    sock.sendall(
        (
            f"GET {path} HTTP/1.1\r\nHost: {u.hostname}:{u.port or 80}\r\n"
            f"Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    f = sock.makefile("rb")
    status = f.readline().decode()
    if " 101 " not in status:
        sys.exit(f"ws-bid: upgrade refused: {status.strip()}")
    while f.readline() not in (b"\r\n", b""):
        pass
    bid = {"type": "bid", "auction": auction, "amount": amount, "ref": "ws-bid"}
    send_frame(sock, 0x1, json.dumps(bid).encode())
    while True:
        opcode, data = recv_frame(f)
        if opcode == 0x8:
            sys.exit("ws-bid: connection closed by the server")
        if opcode != 0x1:
            continue
        msg = json.loads(data)
        if msg.get("type") in ("bid_result", "bid_rejected", "error"):
            print(json.dumps(msg))
            send_frame(sock, 0x8, struct.pack("!H", 1000))  # normal closure
            sys.exit(0 if msg["type"] == "bid_result" else 1)


if __name__ == "__main__":
    main()
