#!/usr/bin/env python3
"""Resident memory of a proxy holding N idle keep-alive client connections.

Opens N connections to URL's host:port (loopback only), sends one GET on each
and reads the response, then keeps them all open and idle (IDLE_WAIT seconds,
default 1), and prints the peak and current RSS of the process group of PID
(VmHWM / VmRSS, summed).

    idle-conns.py PID 127.0.0.1:8090 10000
"""
import os
import resource
import selectors
import socket
import sys
import time


def rss_kib(pid):
    pgid = os.getpgid(pid)
    hwm = rss = 0
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            if os.getpgid(int(p)) != pgid:
                continue
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        hwm += int(line.split()[1])
                    elif line.startswith("VmRSS:"):
                        rss += int(line.split()[1])
        except (ProcessLookupError, FileNotFoundError, PermissionError):
            continue
    return hwm, rss


def main():
    pid, addr, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    host, port = addr.rsplit(":", 1)
    assert host.startswith("127.") or host == "::1", "loopback only"
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, n + 100), max(hard, n + 100)))
    before = rss_kib(pid)
    socks = []
    req = f"GET / HTTP/1.1\r\nhost: {host}\r\n\r\n".encode()
    for i in range(n):
        s = socket.create_connection((host, int(port)), timeout=10)
        s.sendall(req)
        socks.append(s)
        if len(socks) % 500 == 0:  # read responses in batches
            for t in socks[-500:]:
                t.recv(4096)
    for t in socks[len(socks) - len(socks) % 500:]:
        t.recv(4096)
    # IDLE_WAIT (seconds, default 1): how long they sit idle before the
    # measurement; past the proxy's upstream pool idle timeout (waygate:
    # 4 s) it also shows what closing the pooled connections gives back.
    time.sleep(float(os.environ.get("IDLE_WAIT", "1")))
    after = rss_kib(pid)
    print(f"connections={n} rss_before_kib={before[1]} rss_idle_kib={after[1]} "
          f"per_conn_bytes={(after[1] - before[1]) * 1024 // n} peak_kib={after[0]}")
    for s in socks:
        s.close()


if __name__ == "__main__":
    main()
