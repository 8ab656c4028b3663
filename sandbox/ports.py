"""Loopback ports for the sandbox: picking free ones, and seeing who listens where.

Ports are picked at random outside the kernel's ephemeral range (so outgoing
connections never take them) and reserved for a few minutes in a per-user file
under the temporary directory. The reservation is what keeps two sandboxes that
start at the same moment (a developer's and a test's, or two pytest workers)
from picking the same port before either has bound it.

Listening sockets are read from /proc/net/tcp and /proc/net/tcp6, and tied to a
process through the socket inodes in /proc/PID/fd, so checks need no ss or lsof.
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import socket
import tempfile
import time

LOOPBACK = "127.0.0.1"
# Lowest port handed out; below it sit many well-known development defaults.
PORT_FLOOR = 20000
PORT_CEILING = 65535
# How long a handed-out port stays reserved for the process that asked for it.
RESERVATION_SECONDS = 600
_TCP_LISTEN = "0A"


class PortError(Exception):
    """No free port could be found."""


def ephemeral_range():
    """(low, high) of the kernel's ephemeral port range."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as handle:
            low, high = handle.read().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def candidate_ports():
    """Every port the allocator may hand out, in no particular order."""
    low, high = ephemeral_range()
    return [p for p in range(PORT_FLOOR, PORT_CEILING + 1) if not low <= p <= high]


def is_free(port, host=LOOPBACK):
    """True when a server could bind host:port now (SO_REUSEADDR, as Go and Python servers do)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        return True
    except OSError:
        return False
    finally:
        sock.close()


def _reservation_path():
    return os.path.join(tempfile.gettempdir(), "cap-sandbox-ports-%d.json" % os.getuid())


def allocate(names, host=LOOPBACK):
    """Map each name to a distinct free port on host, reserved for RESERVATION_SECONDS."""
    names = list(names)
    path = _reservation_path()
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    with os.fdopen(fd, "r+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        now = time.time()
        try:
            reserved = {int(p): float(t) for p, t in json.loads(handle.read() or "{}").items()}
        except (ValueError, AttributeError, TypeError):
            reserved = {}
        reserved = {p: t for p, t in reserved.items() if t > now}
        chosen = {}
        candidates = candidate_ports()
        random.shuffle(candidates)
        for port in candidates:
            if len(chosen) == len(names):
                break
            if port in reserved or not is_free(port, host):
                continue
            chosen[names[len(chosen)]] = port
            reserved[port] = now + RESERVATION_SECONDS
        if len(chosen) < len(names):
            raise PortError("found only %d of %d free ports on %s"
                            % (len(chosen), len(names), host))
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({str(p): t for p, t in sorted(reserved.items())}))
        handle.flush()
    return chosen


def _decode_address(hex_address):
    """'0100007F:1F90' or a tcp6 address from /proc/net into ('127.0.0.1', 8080)."""
    host_hex, port_hex = hex_address.split(":")
    raw = bytes.fromhex(host_hex)
    if len(raw) == 4:
        host = socket.inet_ntop(socket.AF_INET, raw[::-1])
    else:
        # /proc/net/tcp6 prints four 32-bit words, each in host (little-endian) order.
        words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
        host = socket.inet_ntop(socket.AF_INET6, words)
    return host, int(port_hex, 16)


def listening_sockets():
    """Every TCP listening socket on the host as (host, port, inode)."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as handle:
                lines = handle.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != _TCP_LISTEN:
                continue
            host, port = _decode_address(fields[1])
            found.append((host, port, int(fields[9])))
    return found


def socket_inodes(pid):
    """Inodes of the sockets process pid holds open (empty when it is gone)."""
    inodes = set()
    fd_dir = "/proc/%d/fd" % pid
    try:
        entries = os.listdir(fd_dir)
    except OSError:
        return inodes
    for entry in entries:
        try:
            target = os.readlink(os.path.join(fd_dir, entry))
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[len("socket:["):-1]))
    return inodes


def pid_listeners(pid):
    """Sorted (host, port) pairs on which process pid listens."""
    inodes = socket_inodes(pid)
    return sorted({(host, port) for host, port, inode in listening_sockets() if inode in inodes})


def busy_ports(ports):
    """The subset of ports that some process still listens on, on any address."""
    wanted = set(ports)
    return sorted({port for _host, port, _inode in listening_sockets() if port in wanted})


def wait_until_free(ports, timeout):
    """Wait until nobody listens on any of ports; return the ports still busy at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        busy = busy_ports(ports)
        if not busy or time.monotonic() >= deadline:
            return busy
        time.sleep(0.1)


def can_connect(port, host=LOOPBACK, timeout=0.5):
    """True when a TCP connection to host:port succeeds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
