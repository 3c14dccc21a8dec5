"""Health probes for each component, each a quick call with a short timeout."""

from __future__ import annotations

import socket
import ssl
import urllib.request
from pathlib import Path


def tcp(port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


def https_ok(url: str, certs: Path, timeout: float = 2.0) -> bool:
    ctx = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    ctx.load_cert_chain(str(certs / "admin.crt"), str(certs / "admin.key"))
    try:
        with urllib.request.urlopen(url, context=ctx, timeout=timeout) as resp:
            return bool(resp.status == 200)
    except (OSError, ssl.SSLError):
        return False


def https_insecure_ok(url: str, timeout: float = 2.0) -> bool:
    """Components serving a self-signed cert (controller-manager, scheduler /healthz)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, context=ctx, timeout=timeout) as resp:
            return bool(resp.status == 200)
    except (OSError, ssl.SSLError):
        return False


def http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def redis_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as s:
            s.sendall(b"*1\r\n$4\r\nPING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def kafka_api_versions(port: int) -> bool:
    """A real Kafka ApiVersions (v0) round trip: the broker answers only once it serves."""
    req_body = (18).to_bytes(2, "big") + (0).to_bytes(2, "big") + (1).to_bytes(4, "big") \
        + (5).to_bytes(2, "big") + b"stack"
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2.0) as s:
            s.sendall(len(req_body).to_bytes(4, "big") + req_body)
            size = int.from_bytes(s.recv(4), "big")
            data = b""
            while len(data) < size:
                chunk = s.recv(size - len(data))
                if not chunk:
                    return False
                data += chunk
            return int.from_bytes(data[0:4], "big") == 1 and data[4:6] == b"\x00\x00"
    except OSError:
        return False
