"""A small in-memory Hugging Face Hub for tests, on 127.0.0.1, standard library only.

It answers the part of the Hub's HTTP API that ``huggingface_hub`` (2.x) calls for ``create_repo``,
``create_branch``, ``list_repo_refs``, ``upload_folder``/``upload_file``/``create_commit``, ``repo_info``/
``model_info``, ``list_repo_files``/``list_repo_tree``, ``hf_hub_download`` and ``snapshot_download`` —
and therefore ``transformers``' and ``peft``'s ``from_pretrained(hub_id)``, which go through them.

Point a client at it with ``HfApi(endpoint=hub.url)``, or with ``HF_ENDPOINT=hub.url`` set **before**
``huggingface_hub`` is imported (the endpoint is read once at import: use a subprocess). Send any token
(``HF_TOKEN=dummy``): writes need one, reads of private repos need one, and its value is not checked.

What it implements:

* repositories of type model / dataset / space, ids ``namespace/name``; ``POST /api/repos/create``
  (409 when the repo exists, so ``exist_ok`` works; the private/visibility flag is stored and enforced:
  a private repo answers 401 to a request without a token); ``DELETE /api/repos/delete``;
  every new repo starts with a system commit holding ``.gitattributes``, as on the Hub;
* commits: ``POST /api/{type}s/{id}/preupload/{rev}`` (every file ``uploadMode: "regular"``, with the
  existing blob id so unchanged files are skipped by the client) and ``POST .../commit/{rev}`` (NDJSON
  ``header`` / ``file`` (base64) / ``deletedFile`` / ``deletedFolder`` lines, ``parentCommit`` checked);
* branches: ``POST``/``DELETE .../branch/{name}`` (409 when it exists), ``GET .../refs``; a revision is a
  branch name or a full commit id;
* reads: ``GET /api/{type}s/{id}[/revision/{rev}]`` (``sha``, ``private``, ``siblings``),
  ``GET .../tree/{rev}[/{path}]`` (``recursive``, ``expand``), ``POST .../paths-info/{rev}``,
  ``GET .../commits/{rev}``, ``HEAD``/``GET /[{type}s/]{id}/resolve/{rev}/{path}`` (``X-Repo-Commit``,
  ``ETag`` = git blob id, ``Content-Length``, single ``Range: bytes=N-[M]``); ``GET /api/whoami-v2``;
* ``GET /api/agent-harnesses`` (an empty registry: huggingface_hub 2.x reads it for its user agent);
* ``POST /api/validate-yaml``: the README's front matter must be a YAML mapping (PyYAML when
  importable) and a ``model-index`` must have the Hub's shape (name, results with task.type,
  dataset.type/name, metrics with type/value);
* errors the way the Hub sends them (status + ``X-Error-Code``: ``RepoNotFound``, ``RevisionNotFound``,
  ``EntryNotFound``), so the client raises its usual exceptions.

What it does not: LFS and Xet uploads/downloads (never needed: every file is "regular"), pull requests
(``create_pr`` is refused), tags, pagination (one page), users/organisations and permissions (any token
may write anywhere), gated repos, ``.gitignore``, commit history beyond a parent chain, repo ids without
a namespace, persistence (everything is in memory). Requests it does not know are answered 404 and
recorded in :attr:`FakeHub.unknown` so a test can assert that the client needed nothing else.

Example:
    >>> with FakeHub() as hub:                                               # doctest: +SKIP
    ...     HfApi(endpoint=hub.url, token="dummy").create_repo("org/model")
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

REPO_TYPES = ("model", "dataset", "space")
GITATTRIBUTES = (
    b"*.bin filter=lfs diff=lfs merge=lfs -text\n"
    b"*.pt filter=lfs diff=lfs merge=lfs -text\n"
    b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
)


def git_blob_id(content: bytes) -> str:
    """The git blob id of a file (what the Hub reports as ``oid`` / ``ETag`` for non-LFS files)."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


@dataclass
class Commit:
    oid: str
    parent: str | None
    title: str
    files: dict[str, bytes]
    date: str


@dataclass
class Repo:
    repo_id: str
    repo_type: str
    private: bool
    branches: dict[str, str] = field(default_factory=dict)  # name -> commit oid
    commits: dict[str, Commit] = field(default_factory=dict)
    created: str = field(default_factory=_now)

    def resolve(self, revision: str) -> Commit:
        """A branch name or a full commit id -> the commit (HubHTTPError 404 RevisionNotFound otherwise)."""
        oid = self.branches.get(revision) or (revision if revision in self.commits else None)
        if oid is None:
            raise HubHTTPError(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        return self.commits[oid]

    def commit(self, branch: str, files: dict[str, bytes], title: str) -> Commit:
        parent = self.branches.get(branch)
        digest = hashlib.sha1()
        for part in (self.repo_id, branch, parent or "", title, str(time.time_ns())):
            digest.update(part.encode() + b"\0")
        for path in sorted(files):
            digest.update(path.encode() + b"\0" + git_blob_id(files[path]).encode())
        c = Commit(oid=digest.hexdigest(), parent=parent, title=title, files=dict(files), date=_now())
        self.commits[c.oid] = c
        self.branches[branch] = c.oid
        return c

    def files(self, revision: str = "main") -> dict[str, bytes]:
        return dict(self.resolve(revision).files)


class HubHTTPError(Exception):
    """An error answer: status, the Hub's ``X-Error-Code`` and a message."""

    def __init__(self, status: int, code: str | None, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra


class FakeHub:
    """The server and its in-memory state. ``start()``/``stop()`` or use as a context manager.

    Attributes:
        url: the endpoint, ``http://127.0.0.1:<port>``.
        repos: ``{(repo_type, repo_id): Repo}`` — tests may read it to check what was uploaded.
        requests: ``(method, path, status)`` of every request answered, in order.
        unknown: ``(method, path)`` of requests no route matched (answered 404).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host, self.port = host, port
        self.repos: dict[tuple[str, str], Repo] = {}
        self.requests: list[tuple[str, str, int]] = []
        self.unknown: list[tuple[str, str]] = []
        self.lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- life cycle ------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("FakeHub is not started")
        return f"http://{self.host}:{self._server.server_address[1]}"

    def start(self) -> FakeHub:
        server = ThreadingHTTPServer((self.host, self.port), _Handler)
        server.daemon_threads = True
        server.hub = self  # type: ignore[attr-defined]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="fake-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- state helpers for tests -----------------------------------------------------------------
    def repo(self, repo_id: str, repo_type: str = "model") -> Repo:
        with self.lock:
            try:
                return self.repos[(repo_type, repo_id)]
            except KeyError:
                raise HubHTTPError(404, "RepoNotFound", f"Repository not found: {repo_id}") from None

    def create_repo(self, repo_id: str, repo_type: str = "model", private: bool = False) -> Repo:
        with self.lock:
            if (repo_type, repo_id) in self.repos:
                raise HubHTTPError(409, None, f"You already created this {repo_type} repo: {repo_id}")
            repo = Repo(repo_id=repo_id, repo_type=repo_type, private=private)
            repo.commit("main", {".gitattributes": GITATTRIBUTES}, "initial commit")
            self.repos[(repo_type, repo_id)] = repo
            return repo


def _type_from_plural(plural: str) -> str | None:
    return {"models": "model", "datasets": "dataset", "spaces": "space"}.get(plural)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeHub/1.0"

    @property
    def hub(self) -> FakeHub:
        return self.server.hub  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    # -- plumbing ----------------------------------------------------------------------------------
    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
              content_type: str = "application/json", length: int | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)
        self._status = status

    def _json(self, obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), headers)

    def _authorized(self) -> bool:
        return self.headers.get("Authorization", "").lower().startswith("bearer ") and len(
            self.headers["Authorization"].split(" ", 1)[1].strip()) > 0

    def _need_token(self) -> None:
        if not self._authorized():
            raise HubHTTPError(401, None, "Invalid credentials in Authorization header")

    def _readable(self, repo_type: str, repo_id: str) -> Repo:
        repo = self.hub.repo(repo_id, repo_type)
        if repo.private and not self._authorized():
            raise HubHTTPError(401, "RepoNotFound", "Repository not found")
        return repo

    def _dispatch(self, method: str) -> None:
        self._status = 0
        parts = urlsplit(self.path)
        # Split before unquoting: a revision like "refs%2Fpr%2F1" stays one segment.
        seg = [unquote(s) for s in parts.path.split("/")[1:]]
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        body = self._read_body() if method in ("POST", "PUT", "DELETE") else b""
        try:
            with self.hub.lock:
                handled = self._route(method, seg, query, body)
            if not handled:
                self.hub.unknown.append((method, self.path))
                self._json({"error": f"FakeHub: no route for {method} {parts.path}"}, 404)
        except HubHTTPError as e:
            headers = {"X-Error-Message": e.message}
            if e.code:
                headers["X-Error-Code"] = e.code
            self._json({"error": e.message, **e.extra}, e.status, headers)
        except Exception as e:  # noqa: BLE001 - a bug in the fake: answer 500 rather than hang the client
            self._json({"error": f"FakeHub internal error: {type(e).__name__}: {e}"}, 500)
        finally:
            self.hub.requests.append((method, self.path, self._status))

    # -- routes ------------------------------------------------------------------------------------
    def _route(self, method: str, seg: list[str], query: dict[str, str], body: bytes) -> bool:
        if seg[:1] == ["api"]:
            if seg == ["api", "whoami-v2"] and method == "GET":
                self._need_token()
                self._json({"type": "user", "name": "fake-user", "fullname": "Fake User", "orgs": [],
                            "auth": {"type": "access_token", "accessToken": {"role": "write"}}})
                return True
            if seg == ["api", "agent-harnesses"] and method == "GET":
                # huggingface_hub 2.x fetches this registry once a day for its user-agent string
                self._json({"standardEnvVars": [], "harnesses": {}})
                return True
            if seg == ["api", "repos", "create"] and method == "POST":
                return self._create_repo(json.loads(body or b"{}"))
            if seg == ["api", "repos", "delete"] and method == "DELETE":
                self._need_token()
                payload = json.loads(body or b"{}")
                repo_id = f"{payload['organization']}/{payload['name']}" if payload.get("organization") else payload["name"]
                repo_type = payload.get("type") or "model"
                self.hub.repo(repo_id, repo_type)
                del self.hub.repos[(repo_type, repo_id)]
                self._json({})
                return True
            if seg == ["api", "validate-yaml"] and method == "POST":
                return self._validate_yaml(json.loads(body or b"{}"))
            if len(seg) >= 4 and _type_from_plural(seg[1]):
                return self._repo_api(method, _type_from_plural(seg[1]), f"{seg[2]}/{seg[3]}", seg[4:], query, body)
            return False
        # File downloads: /{ns}/{name}/resolve/{rev}/{path} (models) or /{type}s/{ns}/{name}/resolve/...
        repo_type = "model"
        if seg and _type_from_plural(seg[0]) in ("dataset", "space"):
            repo_type, seg = _type_from_plural(seg[0]), seg[1:]  # type: ignore[assignment]
        if len(seg) >= 5 and seg[2] == "resolve" and method in ("GET", "HEAD"):
            return self._resolve(repo_type, f"{seg[0]}/{seg[1]}", seg[3], "/".join(seg[4:]))
        return False

    def _create_repo(self, payload: dict[str, Any]) -> bool:
        self._need_token()
        name, org = payload.get("name"), payload.get("organization")
        if not name or not org:
            raise HubHTTPError(400, None, "FakeHub needs namespaced repo ids (organization/name)")
        repo_type = payload.get("type") or "model"
        if repo_type not in REPO_TYPES:
            raise HubHTTPError(400, None, f"Invalid repo type {repo_type!r}")
        private = bool(payload.get("private")) or payload.get("visibility") == "private"
        repo_id = f"{org}/{name}"
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        url = f"{self.hub.url}/{prefix}{repo_id}"
        try:
            self.hub.create_repo(repo_id, repo_type, private)
        except HubHTTPError as e:
            e.extra["url"] = url  # the Hub names the existing repo in its 409 answer; exist_ok relies on it
            raise
        self._json({"url": url, "name": repo_id, "id": repo_id})
        return True

    def _validate_yaml(self, payload: dict[str, Any]) -> bool:
        content = payload.get("content", "")
        errors = []
        if content.startswith("---"):
            end = content.find("\n---", 3)
            if end < 0:
                errors.append("the metadata block opened by '---' is never closed")
            else:
                try:
                    import yaml
                except ImportError:  # stdlib-only environments: accept the block unparsed
                    meta = {}
                else:
                    try:
                        meta = yaml.safe_load(content[3:end]) or {}
                    except yaml.YAMLError as e:
                        meta, errors = {}, [f"invalid YAML: {e}"]
                if not isinstance(meta, dict):
                    errors.append("the metadata must be a YAML mapping")
                else:
                    errors.extend(_model_index_errors(meta.get("model-index")))
        if errors:
            self._json({"error": "; ".join(errors), "errors": [{"message": m} for m in errors]}, 400)
        else:
            self._json({"errors": [], "warnings": []})
        return True

    def _repo_api(self, method: str, repo_type: str, repo_id: str, rest: list[str], query: dict[str, str],
                  body: bytes) -> bool:
        if not rest and method == "GET":
            repo = self._readable(repo_type, repo_id)
            return self._info(repo, "main")
        if len(rest) == 2 and rest[0] == "revision" and method == "GET":
            repo = self._readable(repo_type, repo_id)
            return self._info(repo, rest[1])
        if len(rest) >= 2 and rest[0] == "tree" and method == "GET":
            repo = self._readable(repo_type, repo_id)
            return self._tree(repo, rest[1], "/".join(rest[2:]), query)
        if rest == ["refs"] and method == "GET":
            repo = self._readable(repo_type, repo_id)
            self._json({"branches": [{"name": b, "ref": f"refs/heads/{b}", "targetCommit": oid}
                                     for b, oid in sorted(repo.branches.items())],
                        "converts": [], "tags": []})
            return True
        if len(rest) == 2 and rest[0] == "commits" and method == "GET":
            repo = self._readable(repo_type, repo_id)
            c: Commit | None = repo.resolve(rest[1])
            out = []
            while c is not None:
                out.append({"id": c.oid, "title": c.title, "message": "", "authors": [{"user": "fake-user"}],
                            "date": c.date})
                c = repo.commits.get(c.parent) if c.parent else None
            self._json(out)
            return True
        if len(rest) == 2 and rest[0] == "paths-info" and method == "POST":
            repo = self._readable(repo_type, repo_id)
            form = parse_qs(body.decode())
            commit = repo.resolve(rest[1])
            wanted = form.get("paths", [])
            entries = [e for e in _tree_entries(commit, "", recursive=True, with_dirs=True) if e["path"] in wanted]
            self._json(entries)
            return True
        if len(rest) == 2 and rest[0] == "branch" and method in ("POST", "DELETE"):
            self._need_token()
            repo = self.hub.repo(repo_id, repo_type)
            branch = rest[1]
            if method == "DELETE":
                if branch not in repo.branches or branch == "main":
                    raise HubHTTPError(404 if branch not in repo.branches else 403, "RevisionNotFound"
                                       if branch not in repo.branches else None, f"Cannot delete branch {branch}")
                del repo.branches[branch]
                self._json({})
                return True
            if branch in repo.branches:
                raise HubHTTPError(409, None, f"Reference already exists: refs/heads/{branch}")
            start = json.loads(body or b"{}").get("startingPoint") or "main"
            repo.branches[branch] = repo.resolve(start).oid
            self._json({})
            return True
        if len(rest) == 2 and rest[0] == "preupload" and method == "POST":
            self._need_token()
            repo = self.hub.repo(repo_id, repo_type)
            if query.get("create_pr"):
                raise HubHTTPError(400, None, "FakeHub does not implement pull requests")
            existing = repo.resolve(rest[1]).files
            files = json.loads(body or b"{}").get("files", [])
            self._json({"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                                   "oid": git_blob_id(existing[f["path"]]) if f["path"] in existing else None}
                                  for f in files]})
            return True
        if len(rest) == 2 and rest[0] == "commit" and method == "POST":
            return self._commit(self.hub.repo(repo_id, repo_type), rest[1], query, body)
        return False

    def _info(self, repo: Repo, revision: str) -> bool:
        commit = repo.resolve(revision)
        self._json({
            "_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "modelId": repo.repo_id,
            "author": repo.repo_id.split("/")[0],
            "sha": commit.oid,
            "private": repo.private,
            "disabled": False,
            "gated": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "createdAt": repo.created,
            "lastModified": commit.date,
            "siblings": [{"rfilename": p} for p in sorted(commit.files)],
            "usedStorage": sum(len(b) for b in commit.files.values()),
        })
        return True

    def _tree(self, repo: Repo, revision: str, path: str, query: dict[str, str]) -> bool:
        commit = repo.resolve(revision)
        recursive = query.get("recursive", "false").lower() in ("1", "true")
        entries = _tree_entries(commit, path, recursive=recursive, with_dirs=True)
        if path and not entries and path not in commit.files:
            raise HubHTTPError(404, "EntryNotFound", f"{path} does not exist on {revision}")
        if query.get("expand", "false").lower() in ("1", "true"):
            for e in entries:
                e["lastCommit"] = {"id": commit.oid, "title": commit.title, "date": commit.date}
        self._json(entries)
        return True

    def _commit(self, repo: Repo, revision: str, query: dict[str, str], body: bytes) -> bool:
        self._need_token()
        if query.get("create_pr"):
            raise HubHTTPError(400, None, "FakeHub does not implement pull requests")
        if revision not in repo.branches:
            raise HubHTTPError(404, "RevisionNotFound", f"Invalid rev id: {revision} (commits go to a branch)")
        files = dict(repo.resolve(revision).files)
        title = ""
        for line in body.splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item.get("key"), item.get("value", {})
            if key == "header":
                title = value.get("summary", "")
                parent = value.get("parentCommit")
                if parent and parent != repo.branches[revision]:
                    raise HubHTTPError(412, None, f"parentCommit {parent} is not the head of {revision}")
            elif key == "file":
                if value.get("encoding", "base64") != "base64":
                    raise HubHTTPError(400, None, f"unsupported encoding {value.get('encoding')!r}")
                files[value["path"]] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                if value["path"] not in files:
                    raise HubHTTPError(404, "EntryNotFound", f"A file with this name doesn't exist: {value['path']}")
                del files[value["path"]]
            elif key == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                for p in [p for p in files if p.startswith(prefix)]:
                    del files[p]
            elif key == "lfsFile":
                raise HubHTTPError(400, None, "FakeHub does not implement LFS (preupload answers 'regular')")
            else:
                raise HubHTTPError(400, None, f"unknown commit operation {key!r}")
        c = repo.commit(revision, files, title)
        prefix = "" if repo.repo_type == "model" else f"{repo.repo_type}s/"
        self._json({"commitUrl": f"{self.hub.url}/{prefix}{repo.repo_id}/commit/{c.oid}", "commitOid": c.oid,
                    "pullRequestUrl": None})
        return True

    def _resolve(self, repo_type: str, repo_id: str, revision: str, path: str) -> bool:
        repo = self._readable(repo_type, repo_id)
        commit = repo.resolve(revision)
        if path not in commit.files:
            raise HubHTTPError(404, "EntryNotFound", f"{path} does not exist on {revision}")
        content = commit.files[path]
        headers = {"X-Repo-Commit": commit.oid, "ETag": f'"{git_blob_id(content)}"', "Accept-Ranges": "bytes"}
        status, payload = 200, content
        rng = self.headers.get("Range", "")
        if rng.startswith("bytes=") and "," not in rng:
            start_s, _, end_s = rng[len("bytes="):].partition("-")
            start = int(start_s or 0)
            end = min(int(end_s), len(content) - 1) if end_s else len(content) - 1
            if start >= len(content) and content:
                self._send(416, b"", {"Content-Range": f"bytes */{len(content)}"})
                return True
            status, payload = 206, content[start:end + 1]
            headers["Content-Range"] = f"bytes {start}-{end}/{len(content)}"
        self._send(status, payload, headers, content_type="application/octet-stream")
        return True


def _tree_entries(commit: Commit, path: str, recursive: bool, with_dirs: bool) -> list[dict[str, Any]]:
    """Tree listing under ``path``: files (``type: file``, git blob ``oid``, ``size``) and folders."""
    prefix = path.strip("/") + "/" if path.strip("/") else ""
    files, dirs = [], set()
    for p in sorted(commit.files):
        if not p.startswith(prefix):
            continue
        rel = p[len(prefix):]
        parts = rel.split("/")
        for i in range(1, len(parts)):
            if recursive or i == 1:
                dirs.add(prefix + "/".join(parts[:i]))
        if recursive or len(parts) == 1:
            files.append({"type": "file", "oid": git_blob_id(commit.files[p]), "size": len(commit.files[p]), "path": p})
    folders = [{"type": "directory", "oid": hashlib.sha1(d.encode()).hexdigest(), "size": 0, "path": d}
               for d in sorted(dirs)] if with_dirs else []
    return folders + files


def _model_index_errors(model_index: Any) -> list[str]:
    """The checks the Hub makes on ``model-index`` (shape only)."""
    if model_index is None:
        return []
    if not isinstance(model_index, list):
        return ["model-index must be a list"]
    errors = []
    for entry in model_index:
        if not isinstance(entry, dict) or not entry.get("name") or not isinstance(entry.get("results"), list):
            errors.append("each model-index entry needs a name and a list of results")
            continue
        for r in entry["results"]:
            task, ds, metrics = r.get("task"), r.get("dataset"), r.get("metrics")
            if not isinstance(task, dict) or not task.get("type"):
                errors.append("model-index result without task.type")
            if not isinstance(ds, dict) or not ds.get("type") or not ds.get("name"):
                errors.append("model-index result without dataset.type and dataset.name")
            if not isinstance(metrics, list) or not metrics:
                errors.append("model-index result without metrics")
                continue
            for m in metrics:
                if not isinstance(m, dict) or not m.get("type") or "value" not in m:
                    errors.append("model-index metric without type and value")
    return errors


if __name__ == "__main__":  # python tests/fake_hub.py [port]: run it by hand
    import sys

    hub = FakeHub(port=int(sys.argv[1]) if len(sys.argv) > 1 else 0).start()
    print(f"FakeHub on {hub.url} (HF_ENDPOINT={hub.url} HF_TOKEN=dummy); Ctrl-C to stop", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        hub.stop()
