#!/usr/bin/env python3
"""Stdlib-only Kafka readiness probe: sends a Metadata v4 request.

    python3 kafka_ping.py HOST PORT [TIMEOUT_S [EXPECTED_CLUSTER_ID]]

Exit 0 and print "cluster_id=... brokers=[...] controller=..." when the broker
answers with at least one registered broker (and, if given, the expected
cluster id: guards against another broker already owning the port); exit 1
otherwise. Used by
broker.sh (no client library needed). Metadata v4 is the oldest version
Kafka 4.x still accepts (KIP-896 removed v0-v3) and is not "flexible", so
the encoding is plain fixed-width fields.
"""
import socket
import struct
import sys


def _read_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed")
        buf += chunk
    return buf


def metadata(host: str, port: int, timeout: float = 2.0):
    client_id = b"agentmem-testenv-ping"
    body = struct.pack(">hhih", 3, 4, 7, len(client_id)) + client_id
    body += struct.pack(">ib", -1, 0)  # topics=null (all), allow_auto_create=false
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.settimeout(timeout)
        s.sendall(struct.pack(">i", len(body)) + body)
        (size,) = struct.unpack(">i", _read_exact(s, 4))
        data = _read_exact(s, size)
    pos = 0

    def take(fmt):
        nonlocal pos
        vals = struct.unpack_from(fmt, data, pos)
        pos += struct.calcsize(fmt)
        return vals if len(vals) > 1 else vals[0]

    def string():
        nonlocal pos
        n = take(">h")
        if n < 0:
            return None
        s = data[pos:pos + n].decode()
        pos += n
        return s

    corr, _throttle = take(">ii")
    if corr != 7:
        raise ValueError(f"bad correlation id {corr}")
    brokers = []
    for _ in range(take(">i")):
        node_id = take(">i")
        bhost = string()
        bport = take(">i")
        string()  # rack
        brokers.append((node_id, bhost, bport))
    cluster_id = string()
    controller = take(">i")
    return cluster_id, brokers, controller


def main() -> int:
    host, port = sys.argv[1], int(sys.argv[2])
    timeout = float(sys.argv[3]) if len(sys.argv) > 3 else 2.0
    expected = sys.argv[4] if len(sys.argv) > 4 else None
    try:
        cluster_id, brokers, controller = metadata(host, port, timeout)
    except (OSError, ValueError, struct.error) as e:
        print(f"not ready: {e}", file=sys.stderr)
        return 1
    if not brokers:
        print("not ready: no registered brokers yet", file=sys.stderr)
        return 1
    if expected and cluster_id != expected:
        print(f"not ready: port answered by cluster {cluster_id}, expected {expected}", file=sys.stderr)
        return 1
    print(f"cluster_id={cluster_id} brokers={brokers} controller={controller}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
