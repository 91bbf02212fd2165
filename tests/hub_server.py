"""A small in-memory stand-in for the Hugging Face Hub, served on 127.0.0.1 for the Hub tests.

It implements the endpoints that `huggingface_hub` calls when pushing and pulling a model repo with regular
(non-LFS, non-Xet) files, with the Hub's request and response shapes:

- ``POST /api/repos/create``                               create a repo (409 if it exists)
- ``POST /api/validate-yaml``                              check a README's metadata block
- ``POST /api/models/{repo_id}/preupload/{revision}``      upload mode of each file: always ``"regular"``
- ``POST /api/models/{repo_id}/commit/{revision}``         NDJSON commit with base64 files and deletions
- ``GET  /api/models/{repo_id}[/revision/{revision}]``     model info (sha, siblings)
- ``GET  /api/models/{repo_id}/tree/{revision}[/{path}]``  file listing
- ``GET  /api/whoami-v2``                                  the token's user
- ``GET  /api/agent-harnesses``                            huggingface_hub's agent registry (empty here)
- ``HEAD/GET /{repo_id}/resolve/{revision}/{path}``        file metadata and content

Write endpoints need ``Authorization: Bearer <token>`` with a token the stand-in accepts. Tests can make an
endpoint fail (``hub.fail["commit"] = 500``) and read the requests it received (``hub.requests``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

DEFAULT_USER = "stand-in-user"


def git_blob_sha1(content: bytes) -> str:
    """The git object id of a file, as the Hub reports it for regular files."""
    return hashlib.sha1(b"blob %d\x00" % len(content) + content).hexdigest()


@dataclass
class StoredRepo:
    """A repo's files at each commit (newest last) and its visibility."""

    repo_id: str
    private: bool = False
    commits: list[tuple[str, dict[str, bytes]]] = field(default_factory=list)
    #: the commit messages' summaries, oldest first
    summaries: list[str] = field(default_factory=list)

    def files_at(self, revision: str) -> tuple[str, dict[str, bytes]] | None:
        if revision == "main":
            return self.commits[-1] if self.commits else None
        for sha, files in self.commits:
            if sha == revision:
                return sha, files
        return None


class HubStandIn:
    """The Hub's state and fault injection; `serve()` starts it on 127.0.0.1 in a daemon thread."""

    def __init__(self, tokens: dict[str, str] | None = None):
        #: accepted tokens -> user name
        self.tokens = dict(tokens or {})
        self.repos: dict[str, StoredRepo] = {}
        #: endpoint name ("create_repo", "validate_yaml", "preupload", "commit", "model_info", "tree", "resolve")
        #: -> HTTP status to answer with instead of handling the request
        self.fail: dict[str, int] = {}
        #: (method, path, endpoint name) of every request received
        self.requests: list[tuple[str, str, str]] = []
        #: request bodies of write endpoints, decoded (for checking what was sent)
        self.bodies: list[bytes] = []
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None
        self.thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        assert self.server is not None, "call serve() first"
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def serve(self) -> HubStandIn:
        hub = self

        class Handler(_HubRequestHandler):
            state = hub

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="hub-stand-in", daemon=True)
        self.thread.start()
        return self

    def shutdown(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    # ------------------------------------------------------------------ helpers for tests
    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        """The files of a repo at a revision (empty if the repo or revision does not exist)."""
        repo = self.repos.get(repo_id)
        found = repo.files_at(revision) if repo else None
        return dict(found[1]) if found else {}

    def endpoints_called(self) -> list[str]:
        return [name for _, _, name in self.requests]


class _HubRequestHandler(BaseHTTPRequestHandler):
    state: HubStandIn
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002  (quiet: no request log on stderr)
        pass

    # ------------------------------------------------------------------ plumbing
    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(
        self, status: int, payload: Any = None, headers: dict[str, str] | None = None, raw: bytes | None = None
    ) -> None:
        body = raw if raw is not None else (b"" if payload is None else json.dumps(payload).encode())
        self.send_response(status)
        if raw is None and payload is not None:
            self.send_header("Content-Type", "application/json")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, status: int, message: str, code: str | None = None) -> None:
        headers = {"X-Error-Message": message}
        if code:
            headers["X-Error-Code"] = code
        self._send(status, {"error": message}, headers)

    def _user(self) -> str | None:
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            return None
        return self.state.tokens.get(auth.removeprefix("Bearer ").strip())

    def _route(self) -> tuple[str, dict[str, str]]:
        """The endpoint name of the request and its path parameters."""
        path = unquote(urlsplit(self.path).path)
        parts = [p for p in path.split("/") if p]
        if path == "/api/repos/create":
            return "create_repo", {}
        if path == "/api/validate-yaml":
            return "validate_yaml", {}
        if path == "/api/whoami-v2":
            return "whoami", {}
        if path == "/api/agent-harnesses":
            return "agent_harnesses", {}
        if len(parts) >= 4 and parts[:2] == ["api", "models"]:
            repo_id, rest = f"{parts[2]}/{parts[3]}", parts[4:]
            if not rest:
                return "model_info", {"repo_id": repo_id, "revision": "main"}
            if rest[0] in ("revision", "preupload", "commit") and len(rest) == 2:
                name = "model_info" if rest[0] == "revision" else rest[0]
                return name, {"repo_id": repo_id, "revision": rest[1]}
            if rest[0] == "tree" and len(rest) >= 2:
                return "tree", {"repo_id": repo_id, "revision": rest[1], "path": "/".join(rest[2:])}
        if len(parts) >= 5 and parts[2] == "resolve":
            return "resolve", {"repo_id": f"{parts[0]}/{parts[1]}", "revision": parts[3], "path": "/".join(parts[4:])}
        return "unknown", {}

    def _handle(self) -> None:
        name, params = self._route()
        body = self._body() if self.command == "POST" else b""
        with self.state.lock:
            self.state.requests.append((self.command, self.path, name))
            if body:
                self.state.bodies.append(body)
        status = self.state.fail.get(name)
        if status is not None:
            self._error(status, f"Stand-in failure injected on {name}")
            return
        handler = getattr(self, f"_{name}", None)
        if handler is None:
            self._error(404, f"The Hub stand-in does not implement {self.command} {self.path}")
            return
        handler(body=body, **params)

    do_GET = do_POST = do_HEAD = _handle

    # ------------------------------------------------------------------ endpoints
    def _repo_for_read(self, repo_id: str) -> StoredRepo | None:
        repo = self.state.repos.get(repo_id)
        if repo is None or (repo.private and self._user() is None):
            self._error(404, "Repository not found", "RepoNotFound")
            return None
        return repo

    def _require_user(self) -> str | None:
        user = self._user()
        if user is None:
            self._error(401, "Invalid credentials in Authorization header")
        return user

    def _whoami(self, body: bytes) -> None:
        user = self._require_user()
        if user is not None:
            self._send(200, {"type": "user", "name": user})

    def _agent_harnesses(self, body: bytes) -> None:
        self._send(200, {"standardEnvVars": [], "harnesses": {}})

    def _create_repo(self, body: bytes) -> None:
        user = self._require_user()
        if user is None:
            return
        request = json.loads(body or b"{}")
        if request.get("type", "model") != "model":
            self._error(400, "The Hub stand-in only hosts model repos")
            return
        repo_id = f"{request.get('organization') or user}/{request['name']}"
        url = f"{self.state.url}/{repo_id}"
        with self.state.lock:
            if repo_id in self.state.repos:
                self._send(409, {"error": "You already created this model repo", "url": url})
                return
            private = request.get("visibility") == "private" or bool(request.get("private"))
            self.state.repos[repo_id] = StoredRepo(repo_id, private=private)
        self._send(200, {"url": url, "name": repo_id, "id": repo_id})

    def _validate_yaml(self, body: bytes) -> None:
        content = json.loads(body)["content"]
        errors = []
        if content.startswith("---"):
            try:
                metadata = yaml.safe_load(content.split("---", 2)[1]) or {}
            except yaml.YAMLError as err:
                metadata = {}
                errors.append(f"Invalid YAML: {err}")
            base_model = metadata.get("base_model")
            for value in base_model if isinstance(base_model, list) else [base_model] if base_model else []:
                if value.startswith(("/", ".", "~")) or value.count("/") > 1:
                    errors.append(f'"base_model" must be a Hub model id, got "{value}"')
            for entry in metadata.get("model-index") or []:
                for result in entry.get("results") or []:
                    if "dataset" not in result or "metrics" not in result:
                        errors.append('"model-index" results need a "dataset" and "metrics"')
        if errors:
            self._send(400, {"errors": [{"message": e} for e in errors], "warnings": []})
        else:
            self._send(200, {"errors": [], "warnings": []})

    def _preupload(self, body: bytes, repo_id: str, revision: str) -> None:
        if self._require_user() is None or self._repo_for_read(repo_id) is None:
            return
        current = self.state.repos[repo_id].files_at(revision)
        existing = current[1] if current else {}
        files = json.loads(body)["files"]
        self._send(
            200,
            {
                "files": [
                    {
                        "path": f["path"],
                        "uploadMode": "regular",
                        "shouldIgnore": False,
                        "oid": git_blob_sha1(existing[f["path"]]) if f["path"] in existing else None,
                    }
                    for f in files
                ]
            },
        )

    def _commit(self, body: bytes, repo_id: str, revision: str) -> None:
        if self._require_user() is None or self._repo_for_read(repo_id) is None:
            return
        if revision != "main":
            self._error(404, f"Invalid rev id: {revision}", "RevisionNotFound")
            return
        repo = self.state.repos[repo_id]
        with self.state.lock:
            files = dict(repo.commits[-1][1]) if repo.commits else {}
            summary = ""
            for line in body.splitlines():
                if not line.strip():
                    continue
                item = json.loads(line)
                key, value = item["key"], item["value"]
                if key == "header":
                    summary = value["summary"]
                elif key == "file":
                    files[value["path"]] = base64.b64decode(value["content"])
                elif key == "deletedFile":
                    files.pop(value["path"], None)
                elif key == "deletedFolder":
                    prefix = value["path"].rstrip("/") + "/"
                    files = {p: c for p, c in files.items() if not p.startswith(prefix)}
                else:
                    self._error(422, f"The Hub stand-in accepts only regular files, got a {key!r} operation")
                    return
            digest = hashlib.sha1(f"{repo_id}\n{len(repo.commits)}\n{summary}".encode())
            for path in sorted(files):
                digest.update(path.encode() + b"\x00" + files[path])
            sha = digest.hexdigest()
            repo.commits.append((sha, files))
            repo.summaries.append(summary)
        self._send(
            200, {"commitUrl": f"{self.state.url}/{repo_id}/commit/{sha}", "commitOid": sha, "pullRequestUrl": None}
        )

    def _model_info(self, body: bytes, repo_id: str, revision: str) -> None:
        repo = self._repo_for_read(repo_id)
        if repo is None:
            return
        found = repo.files_at(revision)
        if found is None:
            self._error(404, f"Invalid rev id: {revision}", "RevisionNotFound")
            return
        sha, files = found
        self._send(
            200,
            {
                "id": repo_id,
                "modelId": repo_id,
                "sha": sha,
                "private": repo.private,
                "siblings": [{"rfilename": path} for path in sorted(files)],
            },
        )

    def _tree(self, body: bytes, repo_id: str, revision: str, path: str) -> None:
        repo = self._repo_for_read(repo_id)
        if repo is None:
            return
        found = repo.files_at(revision)
        if found is None:
            self._error(404, f"Invalid rev id: {revision}", "RevisionNotFound")
            return
        recursive = parse_qs(urlsplit(self.path).query).get("recursive", ["false"])[0].lower() in ("true", "1")
        prefix = path.rstrip("/") + "/" if path else ""
        entries, folders = [], set()
        for file_path, content in sorted(found[1].items()):
            if not file_path.startswith(prefix):
                continue
            rest = file_path[len(prefix) :]
            if "/" in rest and not recursive:
                folders.add(prefix + rest.split("/")[0])
                continue
            entries.append({"type": "file", "path": file_path, "size": len(content), "oid": git_blob_sha1(content)})
        entries += [{"type": "directory", "path": folder, "oid": "0" * 40} for folder in sorted(folders)]
        self._send(200, entries)

    def _resolve(self, body: bytes, repo_id: str, revision: str, path: str) -> None:
        repo = self._repo_for_read(repo_id)
        if repo is None:
            return
        found = repo.files_at(revision)
        if found is None:
            self._error(404, f"Invalid rev id: {revision}", "RevisionNotFound")
            return
        sha, files = found
        if path not in files:
            self._error(404, "Entry not found", "EntryNotFound")
            return
        content = files[path]
        headers = {"X-Repo-Commit": sha, "ETag": f'"{git_blob_sha1(content)}"'}
        self._send(200, headers=headers, raw=content)
