"""A loopback HTTP file server that injects the failures remote reads meet: 5xx, 429 with Retry-After,
connections reset before a response, bodies cut mid-stream, slow and stalled bodies.

Faults follow a per-file schedule of request indices (HEAD and GET counted together), so a run is
reproducible; every request is logged. Range requests (RFC 9110 §14) are served as 206.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class FaultServer:
    """`with FaultServer(root) as s:` serves `root` at `s.url`; `s.faults` maps a request index to a fault
    ("503", "500", "429:<retry-after>", "reset", "cut", "slow", "stall:<seconds>") for every file,
    `s.always` maps a path to a status returned on every request."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.faults: dict[int, str] = {}
        self.always: dict[str, int] = {}
        self.ranges = True  # False: ignore Range headers, always send the whole file (some servers do)
        self.log: list[tuple[str, str, str, str]] = []  # (path, method, range, fault)
        self.counts: dict[str, int] = {}
        self.active: dict[str, int] = {}   # requests in progress per file
        self.max_files_at_once = 0         # files with a request in progress at the same moment
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_HEAD(self):
                server._handle(self, head=True)

            def do_GET(self):
                server._handle(self, head=False)

        class Server(ThreadingHTTPServer):
            def handle_error(self, request, client_address):
                pass  # clients dropping connections the server cut is the point here

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> FaultServer:
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()

    def reset(self, faults: dict[int, str] | None = None, always: dict[str, int] | None = None, ranges: bool = True):
        """A new schedule and log; first waits (up to 10 s) for requests still served (a stall) to end."""
        for _ in range(1000):
            with self.lock:
                if not any(self.active.values()):
                    break
            time.sleep(0.01)
        with self.lock:
            self.faults, self.always, self.ranges = dict(faults or {}), dict(always or {}), ranges
            self.log, self.counts, self.max_files_at_once = [], {}, 0

    def _handle(self, h: BaseHTTPRequestHandler, head: bool):
        path = h.path.split("?", 1)[0]
        with self.lock:
            index = self.counts.get(path, 0)
            self.counts[path] = index + 1
            fault = self.faults.get(index, "")
            if path in self.always:
                fault = str(self.always[path])
            self.active[path] = self.active.get(path, 0) + 1
            self.max_files_at_once = max(self.max_files_at_once, sum(1 for v in self.active.values() if v))
            self.log.append((path, h.command, h.headers.get("Range", ""), fault))
        try:
            self._respond(h, path, head, fault)
        finally:
            with self.lock:
                self.active[path] -= 1

    def _respond(self, h, path: str, head: bool, fault: str):
        from urllib.parse import unquote
        file = self.root / unquote(path.lstrip("/"))
        if fault == "reset":
            h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            h.close_connection = True
            h.connection.close()
            return
        if fault.split(":")[0] in ("500", "502", "503", "504", "429", "404", "403"):
            status = int(fault.split(":")[0])
            h.send_response(status)
            if ":" in fault:
                h.send_header("Retry-After", fault.split(":", 1)[1])
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        if not file.is_file():
            h.send_response(404)
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        data = file.read_bytes()
        start, end = 0, len(data)
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", h.headers.get("Range", ""))
        if m and self.ranges:
            start, end = int(m.group(1)), min(len(data), int(m.group(2)) + 1 if m.group(2) else len(data))
            h.send_response(206)
            h.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
        else:
            h.send_response(200)
        h.send_header("Content-Length", str(end - start))
        h.send_header("Accept-Ranges", "bytes")
        h.end_headers()
        if head:
            return
        body = data[start:end]
        if fault == "cut":  # the full length announced, half of it sent, then the connection drops
            h.wfile.write(body[: len(body) // 2])
            h.wfile.flush()
            h.close_connection = True
            h.connection.shutdown(socket.SHUT_RDWR)
            return
        if fault == "slow":
            for i in range(0, len(body), max(1, len(body) // 8)):
                h.wfile.write(body[i: i + max(1, len(body) // 8)])
                h.wfile.flush()
                time.sleep(0.02)
            return
        if fault.startswith("stall:"):
            h.wfile.write(body[:1])
            h.wfile.flush()
            time.sleep(float(fault.split(":")[1]))
            h.close_connection = True
            return
        h.wfile.write(body)
