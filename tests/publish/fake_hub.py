"""A fake Hugging Face Hub on 127.0.0.1 with the endpoints `create_repo` + `upload_folder` call.

It speaks the Hub API and the git-LFS basic transfer (not Xet, whose storage protocol is out of
reach of a test server, so clients must run with HF_HUB_DISABLE_XET=1): repo create, README YAML
validation, preupload (small text files `regular`, the rest `lfs`, with the remote oid of committed
files), LFS batch (no upload action for objects it already holds) + PUT, ndjson commit, repo info.
Every request is recorded with its Authorization header. `fail_after=K` makes it refuse every LFS
object after the K-th it stored (HTTP 507, not retried), which interrupts an upload half-way.
`lfs=False` answers `regular` for every file: then huggingface_hub's default client (hf_xet on, the
streamed multi-commit upload) can run against it too, sending contents inline in its commits.
"""

from __future__ import annotations

import base64
import codecs
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

REGULAR_MAX_BYTES = 10 << 20  # as the real Hub: text files under 10 MB are regular git files, the rest LFS


def is_text(sample: bytes) -> bool:
    try:  # incremental: the 512-byte sample may end inside a character
        return b"\0" not in sample and bool(codecs.getincrementaldecoder("utf-8")().decode(sample))
    except UnicodeDecodeError:
        return False


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class FakeHub:
    def __init__(self, token: str, fail_after: int | None = None, lfs: bool = True):
        self.token = token
        self.use_lfs = lfs
        self.fail_after = fail_after
        self.repos: dict[str, dict] = {}  # repo id -> {"private", "files": {path: bytes}, "sha"}
        self.lfs: dict[str, bytes] = {}   # sha256 -> content
        self.log: list[dict] = []         # method, path, authorization, plus what the request carried
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeHub:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()

    def requests(self, method: str, pattern: str = "") -> list[dict]:
        return [r for r in self.log if r["method"] == method and re.search(pattern, r["path"])]

    def _handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep pytest output clean
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    out = b""
                    while size := int(self.rfile.readline().strip(), 16):
                        out += self.rfile.read(size)
                        self.rfile.readline()
                    self.rfile.readline()
                    return out
                return self.rfile.read(int(self.headers.get("Content-Length", 0)))

            def _send(self, status: int, payload) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self, method: str) -> None:
                body = self._body()
                entry = {"method": method, "path": self.path, "authorization": self.headers.get("Authorization")}
                with hub.lock:
                    hub.log.append(entry)
                    status, payload = hub.route(method, self.path, body, entry)
                self._send(status, payload)

            def do_GET(self):
                self._handle("GET")

            def do_POST(self):
                self._handle("POST")

            def do_PUT(self):
                self._handle("PUT")

        return Handler

    # Called with the lock held: one request changes the state at a time.
    def route(self, method: str, path: str, body: bytes, entry: dict) -> tuple[int, dict]:
        path = path.split("?")[0]
        if method == "PUT" and (m := re.fullmatch(r"/lfs-objects/([0-9a-f]{64})", path)):
            return self._put_object(m[1], body, entry)  # presigned storage URL: no Hub token
        if entry["authorization"] != f"Bearer {self.token}":
            return 401, {"error": "Invalid credentials in Authorization header"}
        if method == "POST" and path == "/api/repos/create":
            req = json.loads(body)
            repo = f"{req['organization']}/{req['name']}"
            if repo in self.repos:
                return 409, {"error": "You already created this dataset repo", "url": self._repo_url(repo)}
            self.repos[repo] = {"private": req.get("visibility") == "private", "files": {}, "sha": "0" * 40}
            return 200, {"url": self._repo_url(repo)}
        if method == "POST" and path == "/api/validate-yaml":
            return 200, {"errors": [], "warnings": []}
        if m := re.fullmatch(r"/api/datasets/([^/]+/[^/]+)/preupload/([^/]+)", path):
            return self._preupload(m[1], json.loads(body))
        if m := re.fullmatch(r"/datasets/([^/]+/[^/]+)\.git/info/lfs/objects/batch", path):
            return self._lfs_batch(json.loads(body))
        if m := re.fullmatch(r"/api/datasets/([^/]+/[^/]+)/commit/([^/]+)", path):
            return self._commit(m[1], body, entry)
        if m := re.fullmatch(r"/api/datasets/([^/]+/[^/]+)(?:/revision/[^/]+)?", path):
            if m[1] not in self.repos:
                return 404, {"error": "Repository not found"}
            repo = self.repos[m[1]]
            return 200, {"id": m[1], "sha": repo["sha"], "private": repo["private"],
                         "siblings": [{"rfilename": f} for f in sorted(repo["files"])]}
        return 404, {"error": f"fake hub: no route for {method} {path}"}

    def _repo_url(self, repo: str) -> str:
        return f"{self.url}/datasets/{repo}"

    def _preupload(self, repo: str, req: dict) -> tuple[int, dict]:
        if repo not in self.repos:
            return 404, {"error": "Repository not found"}
        files = self.repos[repo]["files"]
        out = []
        for f in req["files"]:
            text = f["size"] <= REGULAR_MAX_BYTES and is_text(base64.b64decode(f["sample"]))
            mode = "lfs" if self.use_lfs and not text else "regular"
            old = files.get(f["path"])
            oid = None if old is None else (
                git_blob_sha1(old) if mode == "regular" else hashlib.sha256(old).hexdigest())
            out.append({"path": f["path"], "uploadMode": mode, "shouldIgnore": False, "oid": oid})
        return 200, {"files": out}

    def _lfs_batch(self, req: dict) -> tuple[int, dict]:
        objects = []
        for obj in req["objects"]:
            item = {"oid": obj["oid"], "size": obj["size"]}
            if obj["oid"] not in self.lfs:
                item["actions"] = {"upload": {"href": f"{self.url}/lfs-objects/{obj['oid']}"}}
            objects.append(item)
        return 200, {"transfer": "basic", "objects": objects}

    def _put_object(self, oid: str, body: bytes, entry: dict) -> tuple[int, dict]:
        entry["oid"] = oid
        if self.fail_after is not None and len(self.lfs) >= self.fail_after:
            entry["refused"] = True
            return 507, {"error": "fake hub: storage interrupted"}
        if hashlib.sha256(body).hexdigest() != oid:
            return 400, {"error": "content does not match its oid"}
        self.lfs[oid] = body
        return 200, {}

    def _commit(self, repo: str, body: bytes, entry: dict) -> tuple[int, dict]:
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        staged = {}
        for line in lines[1:]:
            value = line["value"]
            if line["key"] == "file":
                staged[value["path"]] = base64.b64decode(value["content"])
            elif line["key"] == "lfsFile":
                if value["oid"] not in self.lfs:
                    return 422, {"error": f"LFS object {value['oid']} was never uploaded"}
                staged[value["path"]] = self.lfs[value["oid"]]
            else:
                return 400, {"error": f"fake hub: unsupported commit operation {line['key']}"}
        entry["files"] = sorted(staged)
        state = self.repos[repo]
        state["files"].update(staged)
        state["sha"] = hashlib.sha1(state["sha"].encode() + body).hexdigest()
        return 200, {"commitUrl": f"{self._repo_url(repo)}/commit/{state['sha']}", "commitOid": state["sha"],
                     "pullRequestUrl": None}
