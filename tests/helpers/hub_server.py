"""A local stand-in for the Hugging Face hub: enough of its HTTP protocol for `huggingface_hub`'s
`snapshot_download` / `hf_hub_download`, served from folders on 127.0.0.1, with faults to switch on.

What the client asks, and what is answered (as the hub does):
- `GET /api/models/{repo}/revision/{rev}`: the repository's info, whose `sha` is the commit;
- `GET /api/models/{repo}/tree/{rev}`: the file list (path, size, oid; `lfs` for weights);
- `HEAD` / `GET /{repo}/resolve/{rev}/{file}`: the file, with `X-Repo-Commit`, `ETag`
  (`X-Linked-Etag` / `X-Linked-Size` for LFS files), `Content-Length`, and `Range` for resuming;
- an unknown repository: 404 with `X-Error-Code: RepoNotFound`, as the hub sends it.

Faults (`server.fault = ...`): "drop" closes the connection halfway through any file larger
than 1 kB (and resumed requests at once), as a network that breaks off mid-download;
"unauthorized" answers every request 401 as the hub does for a rejected token.

    with HubServer({"openai-community/gpt2": folder}) as hub:
        env = {"HF_ENDPOINT": hub.url}

The server stops when the `with` block ends, and by itself after `lifetime` seconds at most.
"""

import hashlib
import json
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

LFS_SUFFIXES = (".safetensors", ".bin")  # stored with git LFS on the hub
DROP_ABOVE = 1024  # "drop" breaks off files larger than this (the weights, not config.json)


class Repo:
    """One repository: its files (read once), their hashes, and a commit derived from them."""

    def __init__(self, folder: Path):
        self.files = {p.name: p.read_bytes() for p in sorted(Path(folder).iterdir()) if p.is_file()}
        self.sha256 = {name: hashlib.sha256(data).hexdigest() for name, data in self.files.items()}
        # git's blob id: what the hub reports as the oid (and the ETag) of files outside LFS
        self.blob_id = {n: hashlib.sha1(b"blob %d\0" % len(d) + d).hexdigest() for n, d in self.files.items()}
        self.commit = hashlib.sha1("".join(self.sha256.values()).encode()).hexdigest()

    def is_lfs(self, name: str) -> bool:
        return name.endswith(LFS_SUFFIXES)

    def etag(self, name: str) -> str:
        return self.sha256[name] if self.is_lfs(name) else self.blob_id[name]

    def tree(self) -> list[dict]:
        entries = []
        for name, data in self.files.items():
            entry = {"type": "file", "path": name, "size": len(data), "oid": self.blob_id[name]}
            if self.is_lfs(name):
                entry["lfs"] = {"oid": self.sha256[name], "size": len(data), "pointerSize": 134}
            entries.append(entry)
        return entries


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as huggingface_hub's client expects
    server: "_Server"

    def log_message(self, format, *args):  # quiet: the tests read the client's output, not ours
        pass

    def do_HEAD(self):
        self._answer(body=False)

    def do_GET(self):
        self._answer(body=True)

    def _answer(self, body: bool):
        hub = self.server.hub
        hub.requests.append(f"{self.command} {self.path}")
        if hub.fault == "unauthorized":
            return self._error(401, None, "Invalid credentials in Authorization header", body)
        path = self.path.split("?")[0]
        api = re.fullmatch(r"/api/models/(.+?)/(revision|tree)/([^/]+)", path)
        resolve = re.fullmatch(r"/(.+?)/resolve/([^/]+)/(.+)", path)
        repo_id = (api or resolve).group(1) if (api or resolve) else None
        if repo_id is None:
            return self._error(404, None, "Not found", body)
        repo = hub.repos.get(repo_id)
        if repo is None:
            return self._error(404, "RepoNotFound", "Repository not found", body)
        revision = (api or resolve).group(3 if api else 2)
        if revision not in ("main", repo.commit):
            return self._error(404, "RevisionNotFound", "Invalid rev id", body)
        if api and api.group(2) == "revision":
            info = {"id": repo_id, "modelId": repo_id, "sha": repo.commit, "private": False}
            info["siblings"] = [{"rfilename": name} for name in repo.files]
            return self._json(info, body)
        if api:
            return self._json(repo.tree(), body)
        return self._file(repo, resolve.group(3), body)

    def _file(self, repo: Repo, name: str, body: bool):
        if name not in repo.files:
            return self._error(404, "EntryNotFound", "Entry not found", body, {"X-Repo-Commit": repo.commit})
        data = repo.files[name]
        ranged = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        if body and self.server.hub.fault == "drop" and len(data) > DROP_ABOVE:
            return self._drop(data, resumed=ranged is not None)
        start = int(ranged.group(1)) if ranged else 0
        self.send_response(206 if ranged else 200)
        headers = {"X-Repo-Commit": repo.commit, "ETag": f'"{repo.etag(name)}"', "Accept-Ranges": "bytes"}
        if repo.is_lfs(name):
            headers |= {"X-Linked-Etag": f'"{repo.sha256[name]}"', "X-Linked-Size": str(len(data))}
        if ranged:
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        headers["Content-Length"] = str(len(data) - start)
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if body:
            self.wfile.write(data[start:])

    def _drop(self, data: bytes, resumed: bool):
        """Break the connection: halfway through the body, or before any answer to a resumed request."""
        if not resumed:
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)

    def _json(self, payload, body: bool):
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)

    def _error(self, status: int, code: str | None, message: str, body: bool, extra: dict | None = None):
        data = json.dumps({"error": message}).encode()
        self.send_response(status)
        for key, value in (
            ({"X-Error-Code": code} if code else {}) | {"X-Error-Message": message} | (extra or {})
        ).items():
            self.send_header(key, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)


def hub_env(url: str, folder: Path, **extra) -> dict:
    """The environment a huggingface_hub client needs to download from the hub at `url`, into an
    empty cache under folder/hf (HF_HOME), whatever the caller's environment says."""
    cache = Path(folder) / "hf"
    return (
        {"HF_ENDPOINT": url, "HF_HOME": str(cache), "HF_HUB_CACHE": str(cache / "hub"), "HF_HUB_OFFLINE": "0"}
        | {"NO_PROXY": "127.0.0.1,localhost", "HF_HUB_DISABLE_TELEMETRY": "1"}
        | extra
    )


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a client stuck mid-request must not keep the test process alive
    hub: "HubServer"


class HubServer:
    """The local hub on a free port of 127.0.0.1; `url` is what HF_ENDPOINT should be set to."""

    def __init__(self, repos: dict[str, Path], lifetime: float = 300.0):
        self.repos = {repo_id: Repo(folder) for repo_id, folder in repos.items()}
        self.fault: str | None = None
        self.requests: list[str] = []
        self.lifetime = lifetime
        self._server: _Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "HubServer":
        self._server = _Server(("127.0.0.1", 0), Handler)
        self._server.hub = self
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self._deadline = threading.Timer(self.lifetime, self.stop)  # bounded even if nobody stops it
        self._deadline.daemon = True
        self._deadline.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            self._deadline.cancel()
            server.shutdown()
            server.server_close()

    def __enter__(self) -> "HubServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
