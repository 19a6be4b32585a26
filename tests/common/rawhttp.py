"""Raw HTTP/1.1 over a socket, for requests a client library will not send (chunked bodies of any size,
``%00`` in paths, bytes that are not UTF-8), and real service processes to send them to."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes
    sent: int = 0  # body bytes the client managed to send before the server stopped reading
    send_error: str | None = None

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def error(self) -> dict[str, Any]:
        err: dict[str, Any] = self.json()["error"]
        return err


def _read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"connection closed before the response head: {data[:200]!r}")
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return status, headers, rest[:length]


def request(
    port: int,
    method: str,
    target: str,
    *,
    body: bytes | None = None,
    chunks: Iterable[bytes] | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 60.0,
) -> RawResponse:
    """Send one request exactly as written; ``chunks`` sends ``Transfer-Encoding: chunked`` with no
    Content-Length, from a thread, so the answer is read even while the server refuses to read more."""
    head = [f"{method} {target} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: close"]
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    if chunks is not None:
        hdrs["Transfer-Encoding"] = "chunked"
    elif body is not None:
        hdrs["Content-Length"] = str(len(body))
    head += [f"{k}: {v}" for k, v in hdrs.items()]
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sent = {"bytes": 0, "error": None}
    try:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
        if chunks is None:
            if body:
                sock.sendall(body)
            status, rheaders, rbody = _read_response(sock)
            return RawResponse(status, rheaders, rbody)

        def pump() -> None:
            try:
                for chunk in chunks:
                    sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                    sent["bytes"] += len(chunk)
                sock.sendall(b"0\r\n\r\n")
            except OSError as exc:  # the server answered and closed: the rest is never read
                sent["error"] = type(exc).__name__

        sender = threading.Thread(target=pump, daemon=True)
        sender.start()
        status, rheaders, rbody = _read_response(sock)
        with contextlib.suppress(OSError):  # already reset by the server
            sock.shutdown(socket.SHUT_RDWR)
        sender.join(timeout)
        return RawResponse(status, rheaders, rbody, sent=int(sent["bytes"] or 0), send_error=sent["error"])
    finally:
        sock.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_kib(pid: int, key: str = "VmRSS") -> int:
    """Resident memory (``VmRSS``) or its peak (``VmHWM``) of a process, KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


@dataclass
class Service:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    env: dict[str, str] = field(default_factory=dict)


@contextmanager
def uvicorn_service(name: str, env: dict[str, str], log: Path, timeout: float = 60.0) -> Iterator[Service]:
    """``uvicorn services.<name>.app:create_app --factory`` on a free port, until ``/health`` answers."""
    port = free_port()
    full = {k: v for k, v in os.environ.items() if not k.startswith("BTP_")}
    full.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", **env)
    cmd = [sys.executable, "-m", "uvicorn", f"services.{name}.app:create_app", "--factory",
           "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]  # fmt: skip
    with open(log, "ab") as fh:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=full, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if request(port, "GET", "/health", timeout=2).status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not become healthy:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield Service(proc, port, log, env)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
