"""A local, disk-backed implementation of the Hugging Face Hub HTTP protocol, for tests.

`LocalHub` serves the subset of the Hub API that `huggingface_hub` 2.x (and `transformers` on top
of it) uses to create repositories, commit files, list them and download them, so that upload /
download code can be exercised end to end without network access:

* repositories (model / dataset / space) with public or private visibility, stored on disk;
* git-like history: commits with 40-hex ids, branches (``main`` + ``create_branch``), tags and
  pull-request refs (``refs/pr/N``), so downloads pinned to an older commit keep working;
* uploads through ``preupload`` + ``commit`` (ndjson). By default every file is announced as a
  *regular* upload (its content travels base64-encoded inside the commit payload), so neither
  Git LFS nor Xet is involved. With ``lfs_threshold`` set, files of at least that size are
  announced as LFS and the LFS batch API (basic transfer + verify) is served; note that the client
  then uses Xet if `hf_xet` is installed, unless ``HF_HUB_DISABLE_XET=1``. Xet is never
  advertised (no ``X-Xet-*`` headers, no ``xetHash`` in listings, xet token routes answer 501);
* downloads through ``HEAD``/``GET /{repo_id}/resolve/{revision}/{path}`` with the ``ETag``,
  ``X-Repo-Commit``, ``X-Linked-Etag``/``X-Linked-Size`` and ``Content-Length`` headers the client
  needs, plus ``Range`` support for resumed downloads;
* tokens configured on the server (``add_token``): reads of private repos and all writes need a
  valid token; refusals use the Hub's status codes and ``X-Error-Code`` headers;
* failure injection: answer the next N requests (or all requests for a period) with a given
  status, delay them, or drop the connection; stop and restart the server on the same port.

Tokens are kept in memory only and are never written to the storage directory nor to the request
log (which only records whether a request was authenticated and as whom).

Typical use::

    with LocalHub() as hub:
        token = hub.add_token("alice")
        api = HfApi(endpoint=hub.url, token=token)
        api.create_repo("alice/tiny")
        ...
        subprocess.run([...], env=hub.client_env(token=token, hf_home=tmp_path / "hf"))
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import hashlib
import hmac
import json
import os
import re
import secrets
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

__all__ = [
    "HubError",
    "LocalHub",
    "RequestRecord",
    "TokenInfo",
]

REPO_TYPES: tuple[str, ...] = ("model", "dataset", "space")
_URL_PREFIXES: dict[str, str] = {"dataset": "datasets", "space": "spaces"}
_PREFIX_TO_TYPE: dict[str, str] = {v: k for k, v in _URL_PREFIXES.items()}
_NAME_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9_])?$")
_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")

#: Content of the ``.gitattributes`` file the Hub puts in the initial commit of every new repo.
DEFAULT_GITATTRIBUTES = "".join(
    f"{pattern} filter=lfs diff=lfs merge=lfs -text\n"
    for pattern in (
        "*.bin",
        "*.ckpt",
        "*.h5",
        "*.npy",
        "*.npz",
        "*.onnx",
        "*.pt",
        "*.pth",
        "*.safetensors",
        "*.tar.gz",
        "*.zip",
    )
)


def _now_iso() -> str:
    """Current UTC time in the Hub's ``%Y-%m-%dT%H:%M:%S.%fZ`` (milliseconds) format."""
    now = datetime.now(timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def git_blob_oid(content: bytes) -> str:
    """Git object id (sha1 of ``blob <len>\\0<content>``) of a blob."""
    return hashlib.sha1(b"blob %d\x00" % len(content) + content).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    """Git LFS pointer file for an object."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


class HubError(Exception):
    """An HTTP error answered to the client, with the Hub's ``X-Error-Code`` conventions."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        error_code: str | None = None,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_code = error_code
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})


@dataclass(frozen=True)
class TokenInfo:
    """What a server-side token grants: a user name, write access, and organisation memberships."""

    user: str
    write: bool = True
    orgs: tuple[str, ...] = ()

    def namespaces(self) -> set[str]:
        """Namespaces this token may read privately and (if ``write``) write to."""
        return {self.user, *self.orgs}


@dataclass
class RequestRecord:
    """One served request, as kept in `LocalHub.requests` (never contains the token)."""

    method: str
    path: str
    status: int
    user: str | None
    authenticated: bool
    fault: str | None = None
    #: ``time.monotonic()`` when the request line was read, and when handling ended (response sent or dropped):
    #: lets a test check which requests overlapped in time.
    received_at: float = 0.0
    finished_at: float = 0.0


@dataclass
class _FaultRule:
    kind: str  # "status" | "delay" | "drop"
    status: int = 500
    seconds: float = 0.0
    remaining: int | None = None
    until: float | None = None
    method: str | None = None
    path_contains: str | None = None

    def matches(self, method: str, path: str, now: float) -> bool:
        if self.until is not None and now > self.until:
            return False
        if self.remaining is not None and self.remaining <= 0:
            return False
        if self.method is not None and self.method.upper() != method:
            return False
        if self.path_contains is not None and self.path_contains not in path:
            return False
        return True

    def expired(self, now: float) -> bool:
        return (self.remaining is not None and self.remaining <= 0) or (self.until is not None and now > self.until)


@dataclass
class _Entry:
    """A file in a commit tree."""

    sha256: str
    size: int
    lfs: bool
    git_oid: str

    def to_json(self) -> dict[str, Any]:
        return {"sha256": self.sha256, "size": self.size, "lfs": self.lfs, "git_oid": self.git_oid}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> _Entry:
        return cls(sha256=data["sha256"], size=int(data["size"]), lfs=bool(data["lfs"]), git_oid=data["git_oid"])

    @property
    def etag(self) -> str:
        """ETag the Hub sends: the LFS sha256 for LFS files, the git blob id otherwise."""
        return self.sha256 if self.lfs else self.git_oid


@dataclass
class _Repo:
    repo_type: str
    repo_id: str
    private: bool
    created_at: str
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    prs: dict[int, str] = field(default_factory=dict)
    last_modified: str = ""

    @property
    def namespace(self) -> str:
        return self.repo_id.split("/", 1)[0]

    def to_json(self) -> dict[str, Any]:
        return {
            "repo_type": self.repo_type,
            "repo_id": self.repo_id,
            "private": self.private,
            "created_at": self.created_at,
            "last_modified": self.last_modified,
            "branches": self.branches,
            "tags": self.tags,
            "prs": {str(k): v for k, v in self.prs.items()},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> _Repo:
        return cls(
            repo_type=data["repo_type"],
            repo_id=data["repo_id"],
            private=bool(data["private"]),
            created_at=data["created_at"],
            last_modified=data.get("last_modified", data["created_at"]),
            branches=dict(data.get("branches", {})),
            tags=dict(data.get("tags", {})),
            prs={int(k): v for k, v in data.get("prs", {}).items()},
        )


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


class HubStorage:
    """Disk-backed repositories: ``<root>/blobs/<sha256>`` plus one directory per repository.

    A repository directory (``<root>/repos/<type>s/<namespace>/<name>/``) holds ``repo.json``
    (visibility and refs) and ``commits/<commit id>.json`` (parents, message, author and the full
    file tree of that commit). Blob content is stored once, addressed by sha256.
    """

    def __init__(self, root: str | os.PathLike[str], *, init_gitattributes: bool = True) -> None:
        self.root = Path(root)
        self.init_gitattributes = init_gitattributes
        self.lock = threading.RLock()
        (self.root / "blobs").mkdir(parents=True, exist_ok=True)
        (self.root / "repos").mkdir(parents=True, exist_ok=True)

    # -- paths -----------------------------------------------------------------------------------
    def _repo_dir(self, repo_type: str, repo_id: str) -> Path:
        namespace, name = repo_id.split("/", 1)
        return self.root / "repos" / f"{repo_type}s" / namespace / name

    def blob_path(self, sha256: str) -> Path:
        """Where the content of a blob is stored."""
        if not _SHA256_RE.fullmatch(sha256):
            raise HubError(400, f"Invalid object id: {sha256}")
        return self.root / "blobs" / sha256

    # -- blobs -------------------------------------------------------------------------------------
    def put_blob(self, content: bytes) -> str:
        """Store a blob (idempotent) and return its sha256."""
        sha = hashlib.sha256(content).hexdigest()
        path = self.blob_path(sha)
        if not path.exists():
            _atomic_write(path, content)
        return sha

    def has_blob(self, sha256: str) -> bool:
        """Whether a blob with this sha256 is stored."""
        return _SHA256_RE.fullmatch(sha256) is not None and self.blob_path(sha256).exists()

    def read_blob(self, sha256: str) -> bytes:
        """Content of a stored blob."""
        return self.blob_path(sha256).read_bytes()

    # -- repos -----------------------------------------------------------------------------------
    @staticmethod
    def validate_repo_id(repo_id: str) -> None:
        """Raise a 400 `HubError` unless ``repo_id`` is ``namespace/name`` with valid characters."""
        parts = repo_id.split("/")
        if len(parts) != 2 or not all(_NAME_RE.fullmatch(p) and ".." not in p for p in parts):
            raise HubError(400, f"Invalid repo id: {repo_id!r}")

    def get_repo(self, repo_type: str, repo_id: str) -> _Repo | None:
        """The repository, or None if it does not exist."""
        try:
            self.validate_repo_id(repo_id)
        except HubError:
            return None
        path = self._repo_dir(repo_type, repo_id) / "repo.json"
        with self.lock:
            if not path.exists():
                return None
            return _Repo.from_json(json.loads(path.read_text()))

    def save_repo(self, repo: _Repo) -> None:
        """Persist a repository's metadata and refs."""
        with self.lock:
            data = json.dumps(repo.to_json(), indent=1, sort_keys=True).encode()
            _atomic_write(self._repo_dir(repo.repo_type, repo.repo_id) / "repo.json", data)

    def create_repo(self, repo_type: str, repo_id: str, *, private: bool, author: str) -> _Repo:
        """Create a repository with an initial commit on ``main``; 409 if it already exists."""
        self.validate_repo_id(repo_id)
        with self.lock:
            if self.get_repo(repo_type, repo_id) is not None:
                raise HubError(409, f"You already created this {repo_type} repo")
            now = _now_iso()
            repo = _Repo(repo_type=repo_type, repo_id=repo_id, private=private, created_at=now, last_modified=now)
            tree: dict[str, _Entry] = {}
            if self.init_gitattributes:
                content = DEFAULT_GITATTRIBUTES.encode()
                tree[".gitattributes"] = _Entry(self.put_blob(content), len(content), False, git_blob_oid(content))
            sha = self.write_commit(repo, parents=[], tree=tree, summary="initial commit", description="", author=author)  # noqa: E501
            repo.branches["main"] = sha
            self.save_repo(repo)
            return repo

    def delete_repo(self, repo_type: str, repo_id: str) -> None:
        """Delete a repository (blobs are kept: they are content-addressed and may be shared)."""
        with self.lock:
            if self.get_repo(repo_type, repo_id) is None:
                raise HubError(404, "Repository not found", error_code="RepoNotFound")
            shutil.rmtree(self._repo_dir(repo_type, repo_id))

    def list_repos(self) -> list[tuple[str, str]]:
        """All ``(repo_type, repo_id)`` pairs stored."""
        out = []
        for repo_json in sorted((self.root / "repos").glob("*/*/*/repo.json")):
            data = json.loads(repo_json.read_text())
            out.append((data["repo_type"], data["repo_id"]))
        return out

    # -- commits -----------------------------------------------------------------------------------
    def write_commit(
        self,
        repo: _Repo,
        *,
        parents: list[str],
        tree: Mapping[str, _Entry],
        summary: str,
        description: str,
        author: str,
    ) -> str:
        """Store a commit object and return its 40-hex id (refs are not moved)."""
        date = _now_iso()
        body = {
            "parents": parents,
            "summary": summary,
            "description": description,
            "author": author,
            "date": date,
            "tree": {path: entry.to_json() for path, entry in sorted(tree.items())},
        }
        nonce = uuid.uuid4().hex  # two identical commits made in the same millisecond still differ
        sha = hashlib.sha1(json.dumps({**body, "nonce": nonce}, sort_keys=True).encode()).hexdigest()
        body["id"] = sha
        commit_path = self._repo_dir(repo.repo_type, repo.repo_id) / "commits" / f"{sha}.json"
        _atomic_write(commit_path, json.dumps(body, indent=1).encode())
        repo.last_modified = date
        return sha

    def read_commit(self, repo: _Repo, sha: str) -> dict[str, Any]:
        """A commit object (with ``tree`` converted to `_Entry` values)."""
        path = self._repo_dir(repo.repo_type, repo.repo_id) / "commits" / f"{sha}.json"
        data = json.loads(path.read_text())
        data["tree"] = {p: _Entry.from_json(e) for p, e in data["tree"].items()}
        return data

    def has_commit(self, repo: _Repo, sha: str) -> bool:
        """Whether ``sha`` is a commit of this repository."""
        return bool(_COMMIT_RE.fullmatch(sha)) and (
            self._repo_dir(repo.repo_type, repo.repo_id) / "commits" / f"{sha}.json"
        ).exists()

    def resolve(self, repo: _Repo, revision: str) -> str:
        """Commit id for a branch, tag, ``refs/pr/N``, ``refs/heads/x``, ``refs/tags/x`` or commit id."""
        rev = revision
        if rev.startswith("refs/heads/"):
            rev = rev[len("refs/heads/") :]
            if rev in repo.branches:
                return repo.branches[rev]
        elif rev.startswith("refs/tags/"):
            rev = rev[len("refs/tags/") :]
            if rev in repo.tags:
                return repo.tags[rev]
        elif rev.startswith("refs/pr/"):
            num = rev[len("refs/pr/") :]
            if num.isdigit() and int(num) in repo.prs:
                return repo.prs[int(num)]
        else:
            if rev in repo.branches:
                return repo.branches[rev]
            if rev in repo.tags:
                return repo.tags[rev]
            if self.has_commit(repo, rev):
                return rev
        raise HubError(404, f"Invalid rev id: {revision}", error_code="RevisionNotFound")

    def history(self, repo: _Repo, sha: str) -> list[dict[str, Any]]:
        """Commits reachable from ``sha`` following first parents, newest first."""
        out = []
        current: str | None = sha
        while current:
            commit = self.read_commit(repo, current)
            out.append(commit)
            current = commit["parents"][0] if commit["parents"] else None
        return out


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 128  # socketserver's default backlog of 5 can overflow with parallel uploads on a busy machine

    def __init__(self, address: tuple[str, int], hub: LocalHub) -> None:
        self.hub = hub
        super().__init__(address, _Handler)


class LocalHub:
    """A Hub-protocol HTTP server on ``127.0.0.1`` backed by a directory (see module docstring).

    Args:
        root_dir: Where repositories and blobs are stored. A temporary directory (removed by
            `close`) is used if not given.
        port: Port to bind; ``0`` picks a free one. `start` after `stop` re-binds the same port.
        lfs_threshold: Files of at least this many bytes are announced as LFS uploads in
            ``preupload``; ``None`` (default) makes every upload "regular" (no LFS, no Xet).
        init_gitattributes: Put a ``.gitattributes`` in the initial commit of new repos, like the
            Hub does.
        allow_anonymous_create: Accept ``create_repo`` without a token (not Hub-like; off).
    """

    def __init__(
        self,
        root_dir: str | os.PathLike[str] | None = None,
        *,
        port: int = 0,
        lfs_threshold: int | None = None,
        init_gitattributes: bool = True,
        allow_anonymous_create: bool = False,
    ) -> None:
        self._owns_root = root_dir is None
        self.root_dir = Path(root_dir) if root_dir is not None else Path(tempfile.mkdtemp(prefix="localhub-"))
        self.storage = HubStorage(self.root_dir, init_gitattributes=init_gitattributes)
        self.host = "127.0.0.1"
        self.port = port
        self.lfs_threshold = lfs_threshold
        self.allow_anonymous_create = allow_anonymous_create
        self.requests: list[RequestRecord] = []
        self.unhandled: list[str] = []
        self._tokens: dict[str, TokenInfo] = {}
        self._faults: list[_FaultRule] = []
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._upload_secret = secrets.token_bytes(32)
        self._client_homes: list[Path] = []

    # -- lifecycle ---------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """Base URL to use as ``HF_ENDPOINT`` / ``endpoint=``."""
        if not self.port:
            raise RuntimeError("LocalHub has not been started yet")
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the server is currently accepting connections."""
        return self._server is not None

    def start(self) -> LocalHub:
        """Start serving (in a daemon thread). Re-uses the previous port after a `stop`."""
        if self._server is not None:
            return self
        self._stopping.clear()
        last_error: OSError | None = None
        for _ in range(50):  # the port may linger for a moment after a stop
            try:
                self._server = _Server((self.host, self.port), self)
                break
            except OSError as exc:
                last_error = exc
                if not self.port:
                    raise
                time.sleep(0.1)
        if self._server is None:
            raise RuntimeError(f"Could not bind {self.host}:{self.port}") from last_error
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="LocalHub", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving: refuse new connections and abort in-flight (e.g. delayed) ones. Data is kept."""
        server = self._server
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def restart(self) -> LocalHub:
        """`stop` then `start` on the same port."""
        self.stop()
        return self.start()

    def close(self) -> None:
        """Stop and delete the storage directory if it was a temporary one."""
        self.stop()
        if self._owns_root:
            shutil.rmtree(self.root_dir, ignore_errors=True)
        for home in self._client_homes:
            shutil.rmtree(home, ignore_errors=True)
        self._client_homes.clear()

    def __enter__(self) -> LocalHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- tokens ----------------------------------------------------------------------------------------
    def add_token(
        self,
        user: str,
        *,
        token: str | None = None,
        write: bool = True,
        orgs: Iterable[str] = (),
    ) -> str:
        """Register a token for ``user`` (member of ``orgs``) and return it. Kept in memory only."""
        if not _NAME_RE.fullmatch(user):
            raise ValueError(f"Invalid user name: {user!r}")
        token = token or f"hf_local_{secrets.token_hex(16)}"
        with self._lock:
            self._tokens[token] = TokenInfo(user=user, write=write, orgs=tuple(orgs))
        return token

    def revoke_token(self, token: str) -> None:
        """Forget a token (later requests using it get 401 invalid credentials)."""
        with self._lock:
            self._tokens.pop(token, None)

    def token_info(self, token: str | None) -> TokenInfo | None:
        """The `TokenInfo` of a registered token."""
        if token is None:
            return None
        with self._lock:
            return self._tokens.get(token)

    # -- failure injection -----------------------------------------------------------------------------
    def _add_fault(self, rule: _FaultRule) -> None:
        with self._lock:
            self._faults.append(rule)

    def fail_next(
        self, n: int = 1, status: int = 500, *, method: str | None = None, path_contains: str | None = None
    ) -> None:
        """Answer the next ``n`` matching requests with HTTP ``status`` (optionally filtered)."""
        self._add_fault(_FaultRule("status", status=status, remaining=n, method=method, path_contains=path_contains))

    def fail_for(
        self, seconds: float, status: int = 503, *, method: str | None = None, path_contains: str | None = None
    ) -> None:
        """Answer every matching request with HTTP ``status`` for the next ``seconds``."""
        until = time.monotonic() + seconds
        self._add_fault(_FaultRule("status", status=status, until=until, method=method, path_contains=path_contains))

    def delay_next(
        self, n: int, seconds: float, *, method: str | None = None, path_contains: str | None = None
    ) -> None:
        """Wait ``seconds`` before handling the next ``n`` matching requests (to trigger client timeouts)."""
        self._add_fault(_FaultRule("delay", seconds=seconds, remaining=n, method=method, path_contains=path_contains))

    def delay_for(
        self, duration: float, seconds: float, *, method: str | None = None, path_contains: str | None = None
    ) -> None:
        """Wait ``seconds`` before handling every matching request received in the next ``duration``."""
        until = time.monotonic() + duration
        self._add_fault(_FaultRule("delay", seconds=seconds, until=until, method=method, path_contains=path_contains))

    def drop_next(self, n: int = 1, *, method: str | None = None, path_contains: str | None = None) -> None:
        """Close the connection without answering the next ``n`` matching requests."""
        self._add_fault(_FaultRule("drop", remaining=n, method=method, path_contains=path_contains))

    @property
    def pending_faults(self) -> int:
        """Number of failure injections not yet used up or expired."""
        now = time.monotonic()
        with self._lock:
            return sum(not rule.expired(now) for rule in self._faults)

    def clear_faults(self) -> None:
        """Remove all pending failure injections."""
        with self._lock:
            self._faults.clear()

    def _take_faults(self, method: str, path: str) -> list[_FaultRule]:
        """Consume the fault rules matching a request: at most one delay then at most one failure."""
        now = time.monotonic()
        taken: list[_FaultRule] = []
        with self._lock:
            for kind_group in (("delay",), ("status", "drop")):
                for rule in self._faults:
                    if rule.kind in kind_group and rule.matches(method, path, now):
                        if rule.remaining is not None:
                            rule.remaining -= 1
                        taken.append(rule)
                        break
            self._faults = [r for r in self._faults if not r.expired(now)]
        return taken

    # -- helpers for tests ---------------------------------------------------------------------------
    def client_env(
        self,
        *,
        token: str | None = None,
        hf_home: str | os.PathLike[str] | None = None,
        offline: bool = False,
        base: Mapping[str, str] | None = None,
    ) -> dict[str, str]:
        """Environment for a subprocess client: ``HF_ENDPOINT`` here, isolated ``HF_HOME``/cache.

        Inherited Hub variables (tokens, endpoint, cache, offline, xet) are removed first; ``token``
        is exported as ``HF_TOKEN`` if given. Without ``hf_home``, a temporary one (removed by
        `close`) is used.
        """
        env = dict(os.environ if base is None else base)
        for key in list(env):
            if key.startswith(("HF_", "HUGGING_FACE_", "HUGGINGFACE_")) or key in ("TRANSFORMERS_CACHE",):
                env.pop(key)
        env["HF_ENDPOINT"] = self.url
        if hf_home is None:  # a fresh client home, removed by `close`
            hf_home = tempfile.mkdtemp(prefix="localhub-client-home-")
            self._client_homes.append(Path(hf_home))
        env["HF_HOME"] = str(hf_home)
        env["HF_HUB_CACHE"] = str(Path(hf_home) / "hub")
        env["HF_HUB_DISABLE_TELEMETRY"] = "1"
        env["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
        env["HF_HUB_DISABLE_UPDATE_CHECK"] = "1"
        env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
        if token is not None:
            env["HF_TOKEN"] = token
        if offline:
            env["HF_HUB_OFFLINE"] = "1"
        return env

    def create_repo(self, repo_id: str, *, private: bool = False, repo_type: str = "model") -> None:
        """Create a repository directly in storage (no HTTP), e.g. to seed fixtures."""
        self.storage.create_repo(repo_type, repo_id, private=private, author=repo_id.split("/", 1)[0])

    def repo_files(self, repo_id: str, revision: str = "main", *, repo_type: str = "model") -> dict[str, bytes]:
        """Files of a repository at a revision, read directly from storage."""
        repo = self.storage.get_repo(repo_type, repo_id)
        if repo is None:
            raise KeyError(repo_id)
        commit = self.storage.read_commit(repo, self.storage.resolve(repo, revision))
        return {p: self.storage.read_blob(e.sha256) for p, e in commit["tree"].items()}

    def refs(self, repo_id: str, *, repo_type: str = "model") -> dict[str, str]:
        """Branch name -> commit id, read directly from storage."""
        repo = self.storage.get_repo(repo_type, repo_id)
        if repo is None:
            raise KeyError(repo_id)
        return dict(repo.branches)

    def stored_files(self) -> Iterator[Path]:
        """Every file under the storage directory (e.g. to check no secret was persisted)."""
        yield from (p for p in self.root_dir.rglob("*") if p.is_file())

    def reset_requests(self) -> None:
        """Clear the request log."""
        with self._lock:
            self.requests.clear()
            self.unhandled.clear()

    def _record(self, record: RequestRecord) -> None:
        with self._lock:
            self.requests.append(record)

    def _upload_key(self, oid: str) -> str:
        return hmac.new(self._upload_secret, oid.encode(), hashlib.sha256).hexdigest()


# ----------------------------------------------------------------------------------------------------
# Request handling
# ----------------------------------------------------------------------------------------------------


class _Response:
    def __init__(
        self,
        status: int = 200,
        body: bytes | Any = b"",
        *,
        headers: Mapping[str, str] | None = None,
        content_type: str = "application/json",
        content_length: int | None = None,
    ) -> None:
        self.status = status
        if isinstance(body, (bytes, bytearray)):
            self.body = bytes(body)
        else:
            self.body = json.dumps(body).encode()
        self.headers = dict(headers or {})
        self.content_type = content_type
        self.content_length = len(self.body) if content_length is None else content_length


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"  # one request per connection: a stopped server really is gone
    server_version = "LocalHub/1.0"
    _body: bytes | None = None

    # -- plumbing -----------------------------------------------------------------------------------
    @property
    def hub(self) -> LocalHub:
        return self.server.hub

    def setup(self) -> None:
        super().setup()
        with self.hub._lock:
            self.hub._connections.add(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with self.hub._lock:
                self.hub._connections.discard(self.connection)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        """Silence the default stderr access log (the request log is in `LocalHub.requests`)."""

    def do_GET(self) -> None:  # noqa: N802
        self._handle("GET")

    def do_HEAD(self) -> None:  # noqa: N802
        self._handle("HEAD")

    def do_POST(self) -> None:  # noqa: N802
        self._handle("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._handle("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._handle("DELETE")

    def _read_body(self) -> bytes:
        if getattr(self, "_body", None) is not None:
            return self._body
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                line = self.rfile.readline(65537)
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline(65537)
            body = b"".join(chunks)
        else:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
        self._body = body
        return body

    def _json_body(self) -> Any:
        raw = self._read_body()
        if not raw:
            return {}
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise HubError(400, f"Invalid JSON body: {exc}") from exc

    def _send(self, resp: _Response, method: str) -> None:
        self.send_response(resp.status)
        self.send_header("Content-Type", resp.content_type)
        self.send_header("Content-Length", str(resp.content_length))
        self.send_header("Connection", "close")
        for key, value in resp.headers.items():
            self.send_header(key, str(value).encode("ascii", "replace").decode("ascii"))
        self.end_headers()
        if method != "HEAD" and resp.body:
            self.wfile.write(resp.body)

    def _drop(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _handle(self, method: str) -> None:
        self._body = None
        split = urlsplit(self.path)
        raw_path = split.path
        query = parse_qs(split.query, keep_blank_values=True)
        hub = self.hub
        record = RequestRecord(method, self.path, 0, None, False, received_at=time.monotonic())
        try:
            resp = self._apply_faults(method, raw_path, record)
            if resp is None and record.fault in ("drop", "aborted"):
                return
            if resp is None:
                resp = self._authenticated_route(method, raw_path, query, record)
            record.status = resp.status
            self._send(resp, method)
        except (BrokenPipeError, ConnectionResetError):
            record.status = 0
        finally:
            record.finished_at = time.monotonic()
            hub._record(record)

    def _apply_faults(self, method: str, raw_path: str, record: RequestRecord) -> _Response | None:
        """Apply injected faults; returns a response to send instead of handling, if any."""
        hub = self.hub
        for rule in hub._take_faults(method, raw_path):
            if rule.kind == "delay":
                record.fault = f"delay {rule.seconds}s"
                if hub._stopping.wait(rule.seconds):  # server stopped while waiting
                    record.fault = "aborted"
                    self._drop()
                    return None
            elif rule.kind == "drop":
                record.fault = "drop"
                self._drop()
                return None
            else:
                record.fault = f"status {rule.status}"
                try:
                    self._read_body()  # let the client finish sending, so it sees the status
                except (OSError, ValueError):
                    pass
                return _Response(rule.status, {"error": f"Injected failure ({rule.status})"})
        return None

    def _authenticated_route(
        self, method: str, raw_path: str, query: dict[str, list[str]], record: RequestRecord
    ) -> _Response:
        try:
            token = self._bearer_token()
            info = self.hub.token_info(token)
            if token is not None and info is None and not raw_path.startswith("/__lfs__/"):
                raise HubError(401, "Invalid credentials in Authorization header")
            record.user = info.user if info else None
            record.authenticated = info is not None
            return self._route(method, raw_path, query, info)
        except HubError as err:
            headers = dict(err.headers)
            headers["X-Error-Message"] = err.message
            if err.error_code:
                headers["X-Error-Code"] = err.error_code
            return _Response(err.status, {**err.extra, "error": err.message}, headers=headers)
        except (BrokenPipeError, ConnectionResetError):
            raise
        except Exception as exc:  # pragma: no cover - a server bug: make it visible to the client
            return _Response(500, {"error": f"LocalHub internal error: {type(exc).__name__}: {exc}"})

    def _bearer_token(self) -> str | None:
        auth = self.headers.get("Authorization")
        if not auth:
            return None
        scheme, _, value = auth.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise HubError(401, "Invalid credentials in Authorization header")
        return value.strip()

    # -- routing --------------------------------------------------------------------------------------------
    def _route(self, method: str, raw_path: str, query: dict[str, list[str]], tok: TokenInfo | None) -> _Response:
        segs = [unquote(s) for s in raw_path.split("/")[1:]]
        if segs and segs[-1] == "" and len(segs) > 1:
            segs = segs[:-1]
        if segs and segs[0] == "api":
            return self._route_api(method, segs[1:], query, tok)
        if segs and segs[0] == "__lfs__" and method == "PUT" and len(segs) == 2:
            return self._lfs_put(segs[1], query)
        return self._route_web(method, segs, query, tok)

    def _unhandled(self, method: str) -> _Response:
        self.hub.unhandled.append(f"{method} {self.path}")
        raise HubError(404, f"LocalHub does not implement {method} {urlsplit(self.path).path}")

    def _route_api(
        self, method: str, segs: list[str], query: dict[str, list[str]], tok: TokenInfo | None
    ) -> _Response:
        if not segs:
            return self._unhandled(method)
        head = segs[0]
        if head == "whoami-v2" and method == "GET":
            return self._whoami(tok)
        if head == "validate-yaml" and method == "POST":
            return self._validate_yaml()
        if head == "telemetry":
            return _Response(200, {})
        if head == "repos" and len(segs) == 2:
            if segs[1] == "create" and method == "POST":
                return self._create_repo(tok)
            if segs[1] == "delete" and method == "DELETE":
                return self._delete_repo(tok)
        if head in ("models", "datasets", "spaces") and len(segs) >= 3:
            repo_type = head[:-1]
            repo_id = f"{segs[1]}/{segs[2]}"
            rest = segs[3:]
            return self._route_repo_api(method, repo_type, repo_id, rest, query, tok)
        return self._unhandled(method)

    def _route_repo_api(
        self,
        method: str,
        repo_type: str,
        repo_id: str,
        rest: list[str],
        query: dict[str, list[str]],
        tok: TokenInfo | None,
    ) -> _Response:
        action = rest[0] if rest else None
        if action is None and method == "GET":
            return self._repo_info(repo_type, repo_id, "main", query, tok)
        if action == "revision" and len(rest) == 2 and method == "GET":
            return self._repo_info(repo_type, repo_id, rest[1], query, tok)
        if action == "tree" and len(rest) >= 2 and method == "GET":
            return self._tree(repo_type, repo_id, rest[1], "/".join(rest[2:]), query, tok)
        if action == "paths-info" and len(rest) == 2 and method == "POST":
            return self._paths_info(repo_type, repo_id, rest[1], tok)
        if action == "refs" and len(rest) == 1 and method == "GET":
            return self._refs(repo_type, repo_id, query, tok)
        if action == "commits" and len(rest) == 2 and method == "GET":
            return self._commits(repo_type, repo_id, rest[1], tok)
        if action == "preupload" and len(rest) == 2 and method == "POST":
            return self._preupload(repo_type, repo_id, rest[1], query, tok)
        if action == "commit" and len(rest) == 2 and method == "POST":
            return self._commit(repo_type, repo_id, rest[1], query, tok)
        if action == "branch" and len(rest) == 2 and method in ("POST", "DELETE"):
            return self._branch(method, repo_type, repo_id, rest[1], tok)
        if action == "tag" and len(rest) == 2 and method in ("POST", "DELETE"):
            return self._tag(method, repo_type, repo_id, rest[1], tok)
        if action == "settings" and len(rest) == 1 and method == "PUT":
            return self._settings(repo_type, repo_id, tok)
        if action in ("xet-read-token", "xet-write-token"):
            raise HubError(501, "Xet storage is not supported by LocalHub")
        return self._unhandled(method)

    def _route_web(self, method: str, segs: list[str], query: dict[str, list[str]], tok: TokenInfo | None) -> _Response:
        repo_type = "model"
        if segs and segs[0] in _PREFIX_TO_TYPE:
            repo_type = _PREFIX_TO_TYPE[segs[0]]
            segs = segs[1:]
        if len(segs) >= 4 and segs[2] == "resolve" and method in ("GET", "HEAD"):
            return self._resolve(method, repo_type, f"{segs[0]}/{segs[1]}", segs[3], "/".join(segs[4:]), tok)
        if len(segs) == 6 and segs[1].endswith(".git") and segs[2:5] == ["info", "lfs", "objects"] and method == "POST":
            repo_id = f"{segs[0]}/{segs[1][: -len('.git')]}"
            if segs[5] == "batch":
                return self._lfs_batch(repo_type, repo_id, tok)
            if segs[5] == "verify":
                return self._lfs_verify(repo_type, repo_id, tok)
        return self._unhandled(method)

    # -- access control -----------------------------------------------------------------------------------
    def _readable_repo(self, repo_type: str, repo_id: str, tok: TokenInfo | None) -> _Repo:
        repo = self.hub.storage.get_repo(repo_type, repo_id)
        if repo is None or (repo.private and (tok is None or repo.namespace not in tok.namespaces())):
            # Like the Hub: 401 when anonymous, 404 when authenticated, whether missing or private.
            raise HubError(
                401 if tok is None else 404,
                "Repository not found",
                error_code="RepoNotFound",
            )
        return repo

    def _writable_repo(self, repo_type: str, repo_id: str, tok: TokenInfo | None) -> _Repo:
        repo = self._readable_repo(repo_type, repo_id, tok)
        self._check_write(repo.namespace, tok)
        return repo

    @staticmethod
    def _check_write(namespace: str, tok: TokenInfo | None) -> None:
        if tok is None:
            raise HubError(401, "You must be authenticated to perform this action")
        if not tok.write:
            raise HubError(403, "This token is read-only: write access is required")
        if namespace not in tok.namespaces():
            raise HubError(403, f"You don't have the rights to write to the namespace {namespace}")

    def _base_url(self) -> str:
        return self.hub.url

    def _repo_url(self, repo: _Repo) -> str:
        prefix = _URL_PREFIXES.get(repo.repo_type)
        return f"{self._base_url()}/{prefix + '/' if prefix else ''}{repo.repo_id}"

    # -- endpoints: account ------------------------------------------------------------------------------
    def _whoami(self, tok: TokenInfo | None) -> _Response:
        if tok is None:
            raise HubError(401, "Invalid username or password.")
        return _Response(
            200,
            {
                "type": "user",
                "id": hashlib.sha1(tok.user.encode()).hexdigest()[:24],
                "name": tok.user,
                "fullname": tok.user,
                "email": None,
                "orgs": [{"type": "org", "name": org} for org in tok.orgs],
                "auth": {
                    "type": "access_token",
                    "accessToken": {"displayName": "local", "role": "write" if tok.write else "read"},
                },
            },
        )

    def _validate_yaml(self) -> _Response:
        import yaml

        body = self._json_body()
        content = body.get("content", "")
        errors: list[dict[str, str]] = []
        warnings: list[dict[str, str]] = []
        match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", content, flags=re.DOTALL)
        if match is None:
            warnings.append({"message": "empty or missing yaml metadata in repo card"})
        else:
            try:
                meta = yaml.safe_load(match.group(1))
            except yaml.YAMLError as exc:
                errors.append({"message": f"Invalid YAML: {exc}"})
            else:
                if meta is not None and not isinstance(meta, dict):
                    errors.append({"message": "YAML metadata must be a mapping"})
                elif isinstance(meta, dict) and "model-index" in meta and not isinstance(meta["model-index"], list):
                    errors.append({"message": '"model-index" must be an array'})
        if errors:
            return _Response(400, {"errors": errors, "warnings": warnings, "error": errors[0]["message"]})
        return _Response(200, {"errors": [], "warnings": warnings})

    # -- endpoints: repos ----------------------------------------------------------------------------------
    def _create_repo(self, tok: TokenInfo | None) -> _Response:
        body = self._json_body()
        name = body.get("name")
        if not isinstance(name, str) or not name:
            raise HubError(400, "Missing repo name")
        repo_type = body.get("type") or "model"
        if repo_type not in REPO_TYPES:
            raise HubError(400, f"Invalid repo type: {repo_type}")
        organization = body.get("organization")
        if tok is None and not self.hub.allow_anonymous_create:
            raise HubError(401, "You must be authenticated to create a repository")
        namespace = organization or (tok.user if tok else None)
        if namespace is None:
            raise HubError(400, "Missing namespace")
        if tok is not None:
            self._check_write(namespace, tok)
        repo_id = f"{namespace}/{name}"
        if "visibility" in body:
            private = body["visibility"] == "private"
        else:
            private = bool(body.get("private", False))
        storage = self.hub.storage
        with storage.lock:
            existing = storage.get_repo(repo_type, repo_id)
            if existing is not None:
                # The Hub includes the repo URL: `create_repo(exist_ok=True)` returns it.
                raise HubError(
                    409, f"You already created this {repo_type} repo", extra={"url": self._repo_url(existing)}
                )
            repo = storage.create_repo(repo_type, repo_id, private=private, author=tok.user if tok else namespace)
        return _Response(200, {"url": self._repo_url(repo), "name": repo_id, "id": repo_id})

    def _delete_repo(self, tok: TokenInfo | None) -> _Response:
        body = self._json_body()
        repo_type = body.get("type") or "model"
        namespace = body.get("organization") or (tok.user if tok else None)
        if namespace is None:
            raise HubError(401, "You must be authenticated to delete a repository")
        repo_id = f"{namespace}/{body.get('name')}"
        self._writable_repo(repo_type, repo_id, tok)
        self.hub.storage.delete_repo(repo_type, repo_id)
        return _Response(200, {})

    def _settings(self, repo_type: str, repo_id: str, tok: TokenInfo | None) -> _Response:
        storage = self.hub.storage
        with storage.lock:
            repo = self._writable_repo(repo_type, repo_id, tok)
            body = self._json_body()
            if "visibility" in body:
                repo.private = body["visibility"] == "private"
            elif "private" in body:
                repo.private = bool(body["private"])
            storage.save_repo(repo)
        return _Response(200, {"private": repo.private})

    def _repo_info(
        self, repo_type: str, repo_id: str, revision: str, query: dict[str, list[str]], tok: TokenInfo | None
    ) -> _Response:
        import yaml

        storage = self.hub.storage
        with storage.lock:
            repo = self._readable_repo(repo_type, repo_id, tok)
            sha = storage.resolve(repo, revision)
            commit = storage.read_commit(repo, sha)
        tree: dict[str, _Entry] = commit["tree"]
        blobs = query.get("blobs", ["false"])[0].lower() in ("1", "true")
        siblings = []
        for path, entry in sorted(tree.items()):
            sib: dict[str, Any] = {"rfilename": path}
            if blobs:
                sib.update(size=entry.size, blobId=entry.git_oid)
                if entry.lfs:
                    sib["lfs"] = {
                        "sha256": entry.sha256,
                        "size": entry.size,
                        "pointerSize": len(lfs_pointer(entry.sha256, entry.size)),
                    }
            siblings.append(sib)
        card_data: dict[str, Any] | None = None
        if "README.md" in tree:
            text = storage.read_blob(tree["README.md"].sha256).decode("utf-8", errors="replace")
            match = re.match(r"^---\s*\n(.*?)\n---", text, flags=re.DOTALL)
            if match:
                try:
                    loaded = yaml.safe_load(match.group(1))
                    card_data = loaded if isinstance(loaded, dict) else None
                except yaml.YAMLError:
                    card_data = None
        config: dict[str, Any] | None = None
        if "config.json" in tree:
            try:
                raw = json.loads(storage.read_blob(tree["config.json"].sha256))
                config = {k: raw[k] for k in ("model_type", "architectures", "auto_map") if k in raw}
            except ValueError:
                config = None
        tags = list((card_data or {}).get("tags") or [])
        info: dict[str, Any] = {
            "_id": hashlib.sha1(f"{repo_type}/{repo_id}".encode()).hexdigest()[:24],
            "id": repo_id,
            "author": repo.namespace,
            "sha": sha,
            "lastModified": commit["date"],
            "createdAt": repo.created_at,
            "private": repo.private,
            "gated": False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": tags,
            "siblings": siblings,
            "usedStorage": sum(e.size for e in tree.values()),
        }
        if repo_type == "model":
            info["modelId"] = repo_id
            info["library_name"] = (card_data or {}).get("library_name")
            info["pipeline_tag"] = (card_data or {}).get("pipeline_tag")
            info["config"] = config
            info["spaces"] = []
        if card_data is not None:
            info["cardData"] = card_data
        return _Response(200, info)

    def _tree_entry(self, path: str, entry: _Entry, commit: dict[str, Any] | None) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "file", "oid": entry.git_oid, "size": entry.size, "path": path}
        if entry.lfs:
            out["lfs"] = {
                "oid": entry.sha256,
                "size": entry.size,
                "pointerSize": len(lfs_pointer(entry.sha256, entry.size)),
            }
        if commit is not None:
            out["lastCommit"] = {"id": commit["id"], "title": commit["summary"], "date": commit["date"]}
        return out

    @staticmethod
    def _dir_entry(path: str, sha: str, commit: dict[str, Any] | None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": "directory",
            "oid": hashlib.sha1(f"{sha}:{path}".encode()).hexdigest(),
            "size": 0,
            "path": path,
        }
        if commit is not None:
            out["lastCommit"] = {"id": commit["id"], "title": commit["summary"], "date": commit["date"]}
        return out

    def _tree(
        self,
        repo_type: str,
        repo_id: str,
        revision: str,
        path_in_repo: str,
        query: dict[str, list[str]],
        tok: TokenInfo | None,
    ) -> _Response:
        storage = self.hub.storage
        with storage.lock:
            repo = self._readable_repo(repo_type, repo_id, tok)
            sha = storage.resolve(repo, revision)
            commit = storage.read_commit(repo, sha)
        recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
        expand = query.get("expand", ["false"])[0].lower() in ("1", "true")
        tree: dict[str, _Entry] = commit["tree"]
        prefix = path_in_repo.strip("/")
        if prefix:
            if prefix in tree:
                raise HubError(400, f"{prefix} is a file, not a directory")
            if not any(p.startswith(prefix + "/") for p in tree):
                raise HubError(
                    404, f"Entry not found: {prefix}", error_code="EntryNotFound", headers={"X-Repo-Commit": sha}
                )
        entries: list[dict[str, Any]] = []
        dirs: set[str] = set()
        last = commit if expand else None
        for path in sorted(tree):
            if prefix and not path.startswith(prefix + "/"):
                continue
            rel = path[len(prefix) + 1 :] if prefix else path
            parts = rel.split("/")
            base = f"{prefix}/" if prefix else ""
            for depth in range(1, len(parts)):
                if not recursive and depth > 1:
                    break
                dirs.add(base + "/".join(parts[:depth]))
            if recursive or len(parts) == 1:
                entries.append(self._tree_entry(path, tree[path], last))
        entries.extend(self._dir_entry(d, sha, last) for d in sorted(dirs))
        entries.sort(key=lambda e: (e["type"] != "directory", e["path"]))
        return _Response(200, entries)

    def _paths_info(self, repo_type: str, repo_id: str, revision: str, tok: TokenInfo | None) -> _Response:
        storage = self.hub.storage
        with storage.lock:
            repo = self._readable_repo(repo_type, repo_id, tok)
            sha = storage.resolve(repo, revision)
            commit = storage.read_commit(repo, sha)
        raw = self._read_body()
        ctype = self.headers.get("Content-Type", "")
        if "json" in ctype:
            body = json.loads(raw or b"{}")
            paths = body.get("paths", [])
            expand = bool(body.get("expand"))
        else:
            form = parse_qs(raw.decode(), keep_blank_values=True)
            paths = form.get("paths", [])
            expand = form.get("expand", ["false"])[0].lower() in ("1", "true")
        tree: dict[str, _Entry] = commit["tree"]
        out = []
        for path in paths:
            path = path.strip("/")
            if path in tree:
                out.append(self._tree_entry(path, tree[path], commit if expand else None))
            elif any(p.startswith(path + "/") for p in tree):
                out.append(self._dir_entry(path, sha, commit if expand else None))
        return _Response(200, out)

    def _refs(self, repo_type: str, repo_id: str, query: dict[str, list[str]], tok: TokenInfo | None) -> _Response:
        repo = self._readable_repo(repo_type, repo_id, tok)
        include_prs = query.get("include_prs", ["0"])[0].lower() in ("1", "true")
        data: dict[str, Any] = {
            "branches": [
                {"name": n, "ref": f"refs/heads/{n}", "targetCommit": s} for n, s in sorted(repo.branches.items())
            ],
            "converts": [],
            "tags": [{"name": n, "ref": f"refs/tags/{n}", "targetCommit": s} for n, s in sorted(repo.tags.items())],
        }
        if include_prs:
            data["pullRequests"] = [
                {"name": str(n), "ref": f"refs/pr/{n}", "targetCommit": s} for n, s in sorted(repo.prs.items())
            ]
        return _Response(200, data)

    def _commits(self, repo_type: str, repo_id: str, revision: str, tok: TokenInfo | None) -> _Response:
        storage = self.hub.storage
        with storage.lock:
            repo = self._readable_repo(repo_type, repo_id, tok)
            sha = storage.resolve(repo, revision)
            history = storage.history(repo, sha)
        return _Response(
            200,
            [
                {
                    "id": c["id"],
                    "authors": [{"user": c["author"]}],
                    "date": c["date"],
                    "title": c["summary"],
                    "message": c["description"],
                }
                for c in history
            ],
        )

    def _branch(self, method: str, repo_type: str, repo_id: str, branch: str, tok: TokenInfo | None) -> _Response:
        storage = self.hub.storage
        with storage.lock:
            repo = self._writable_repo(repo_type, repo_id, tok)
            if method == "DELETE":
                if branch not in repo.branches:
                    raise HubError(404, f"Invalid rev id: {branch}", error_code="RevisionNotFound")
                if branch == "main":
                    raise HubError(403, "Cannot delete the default branch")
                del repo.branches[branch]
                storage.save_repo(repo)
                return _Response(200, {})
            if not branch or branch.startswith("refs/") or ".." in branch or branch.endswith("/"):
                raise HubError(400, f"Invalid branch name: {branch}")
            if branch in repo.branches:
                raise HubError(409, f"Reference already exists: refs/heads/{branch}")
            body = self._json_body()
            start = storage.resolve(repo, body.get("startingPoint") or "main")
            if body.get("emptyBranch"):
                start = storage.write_commit(
                    repo, parents=[], tree={}, summary="empty branch", description="", author=tok.user if tok else ""
                )
            repo.branches[branch] = start
            storage.save_repo(repo)
        return _Response(200, {})

    def _tag(self, method: str, repo_type: str, repo_id: str, rev_or_tag: str, tok: TokenInfo | None) -> _Response:
        storage = self.hub.storage
        with storage.lock:
            repo = self._writable_repo(repo_type, repo_id, tok)
            if method == "DELETE":
                if rev_or_tag not in repo.tags:
                    raise HubError(404, f"Invalid rev id: {rev_or_tag}", error_code="RevisionNotFound")
                del repo.tags[rev_or_tag]
            else:
                body = self._json_body()
                tag = body.get("tag")
                if not isinstance(tag, str) or not tag:
                    raise HubError(400, "Missing tag name")
                if tag in repo.tags:
                    raise HubError(409, f"Tag already exists: {tag}")
                repo.tags[tag] = storage.resolve(repo, rev_or_tag)
            storage.save_repo(repo)
        return _Response(200, {})

    # -- endpoints: upload ---------------------------------------------------------------------------------
    def _target_head(self, repo: _Repo, revision: str, create_pr: bool) -> str:
        """Commit a preupload/commit request builds on (404 RevisionNotFound for unknown branches)."""
        if revision in repo.branches:
            return repo.branches[revision]
        if revision.startswith("refs/pr/") or create_pr:
            return self.hub.storage.resolve(repo, revision)
        if revision.startswith("refs/heads/") and revision[len("refs/heads/") :] in repo.branches:
            return repo.branches[revision[len("refs/heads/") :]]
        raise HubError(404, f"Invalid rev id: {revision}", error_code="RevisionNotFound")

    @staticmethod
    def _gitignored(path: str, patterns: list[str]) -> bool:
        ignored = False
        for pattern in patterns:
            negate = pattern.startswith("!")
            pat = pattern[1:] if negate else pattern
            pat = pat.rstrip("/")
            anchored = pat.startswith("/")
            pat = pat.lstrip("/")
            if (
                fnmatch.fnmatchcase(path, pat)
                or (not anchored and fnmatch.fnmatchcase(path.rsplit("/", 1)[-1], pat))
                or path.startswith(pat + "/")
            ):
                ignored = not negate
        return ignored

    def _preupload(
        self, repo_type: str, repo_id: str, revision: str, query: dict[str, list[str]], tok: TokenInfo | None
    ) -> _Response:
        storage = self.hub.storage
        create_pr = query.get("create_pr", ["0"])[0] in ("1", "true")
        with storage.lock:
            repo = self._readable_repo(repo_type, repo_id, tok)
            if not create_pr:
                self._check_write(repo.namespace, tok)
            elif tok is None:
                raise HubError(401, "You must be authenticated to open a pull request")
            head = self._target_head(repo, revision, create_pr)
            tree: dict[str, _Entry] = storage.read_commit(repo, head)["tree"]
        body = self._json_body()
        files = body.get("files")
        if not isinstance(files, list):
            raise HubError(400, "Invalid preupload payload: 'files' must be a list")
        gitignore = body.get("gitIgnore")
        if gitignore is None and ".gitignore" in tree:
            gitignore = storage.read_blob(tree[".gitignore"].sha256).decode("utf-8", errors="replace")
        patterns = [
            ln.strip() for ln in (gitignore or "").splitlines() if ln.strip() and not ln.strip().startswith("#")
        ]
        threshold = self.hub.lfs_threshold
        out = []
        for item in files:
            path = item.get("path")
            size = int(item.get("size", 0))
            if not isinstance(path, str):
                raise HubError(400, "Invalid preupload payload: missing path")
            mode = "lfs" if threshold is not None and size >= threshold and size > 0 else "regular"
            existing = tree.get(path)
            oid = None
            if existing is not None:
                oid = existing.sha256 if existing.lfs else existing.git_oid
            out.append(
                {
                    "path": path,
                    "uploadMode": mode,
                    "shouldIgnore": self._gitignored(path, patterns),
                    "oid": oid,
                }
            )
        return _Response(200, {"files": out, "commitOid": head})

    @staticmethod
    def _validate_path(path: Any) -> str:
        if not isinstance(path, str) or not path or path.startswith("/") or "\\" in path:
            raise HubError(400, f"Invalid path: {path!r}")
        parts = path.split("/")
        if any(p in ("", ".", "..", ".git") for p in parts):
            raise HubError(400, f"Invalid path: {path!r}")
        return path

    def _commit(
        self, repo_type: str, repo_id: str, revision: str, query: dict[str, list[str]], tok: TokenInfo | None
    ) -> _Response:
        storage = self.hub.storage
        create_pr = query.get("create_pr", ["0"])[0] in ("1", "true")
        lines = [ln for ln in self._read_body().splitlines() if ln.strip()]
        try:
            items = [json.loads(ln) for ln in lines]
        except ValueError as exc:
            raise HubError(400, f"Invalid ndjson payload: {exc}") from exc
        if not items or items[0].get("key") != "header":
            raise HubError(400, "Invalid commit payload: the first line must be the header")
        header = items[0].get("value", {})
        summary = header.get("summary")
        if not isinstance(summary, str) or not summary.strip():
            raise HubError(400, "Commit summary is required")
        with storage.lock:
            repo = self._readable_repo(repo_type, repo_id, tok)
            if not create_pr:
                self._check_write(repo.namespace, tok)
            elif tok is None:
                raise HubError(401, "You must be authenticated to open a pull request")
            head = self._target_head(repo, revision, create_pr)
            parent_commit = header.get("parentCommit")
            if parent_commit is not None and parent_commit != head:
                raise HubError(412, "A commit has happened since. Please refresh and try again.")
            tree: dict[str, _Entry] = dict(storage.read_commit(repo, head)["tree"])
            for item in items[1:]:
                key = item.get("key")
                value = item.get("value", {})
                if key == "file":
                    path = self._validate_path(value.get("path"))
                    if value.get("encoding", "base64") != "base64":
                        raise HubError(400, f"Unsupported encoding: {value.get('encoding')}")
                    try:
                        content = base64.b64decode(value.get("content", ""), validate=True)
                    except (binascii.Error, ValueError) as exc:
                        raise HubError(400, f"Invalid base64 content for {path}") from exc
                    tree[path] = _Entry(storage.put_blob(content), len(content), False, git_blob_oid(content))
                elif key == "lfsFile":
                    path = self._validate_path(value.get("path"))
                    oid = value.get("oid", "")
                    if value.get("algo", "sha256") != "sha256" or not storage.has_blob(oid):
                        raise HubError(422, f"LFS object {oid} for {path} has not been uploaded")
                    size = storage.blob_path(oid).stat().st_size
                    if "size" in value and int(value["size"]) != size:
                        raise HubError(422, f"Size mismatch for LFS object {oid}")
                    tree[path] = _Entry(oid, size, True, git_blob_oid(lfs_pointer(oid, size)))
                elif key == "deletedFile":
                    path = self._validate_path(value.get("path"))
                    if path not in tree:
                        raise HubError(
                            404, "A file with this name doesn't exist", error_code="EntryNotFound"
                        )
                    del tree[path]
                elif key == "deletedFolder":
                    folder = str(value.get("path", "")).strip("/")
                    doomed = [p for p in tree if folder == "" or p.startswith(folder + "/")]
                    if not doomed:
                        raise HubError(404, "A folder with this name doesn't exist", error_code="EntryNotFound")
                    for p in doomed:
                        del tree[p]
                else:
                    raise HubError(400, f"Unknown commit operation: {key!r}")
            author = tok.user if tok else "anonymous"
            sha = storage.write_commit(
                repo,
                parents=[head],
                tree=tree,
                summary=summary,
                description=header.get("description") or "",
                author=author,
            )
            pr_url = None
            if create_pr:
                num = max(repo.prs, default=0) + 1
                repo.prs[num] = sha
                pr_url = f"{self._repo_url(repo)}/discussions/{num}"
            elif revision.startswith("refs/pr/"):
                repo.prs[int(revision[len("refs/pr/") :])] = sha
            else:
                branch = revision[len("refs/heads/") :] if revision.startswith("refs/heads/") else revision
                repo.branches[branch] = sha
            storage.save_repo(repo)
        return _Response(
            200,
            {
                "success": True,
                "commitOid": sha,
                "commitUrl": f"{self._repo_url(repo)}/commit/{sha}",
                "pullRequestUrl": pr_url,
                "hookOutput": "",
            },
        )

    # -- endpoints: LFS ------------------------------------------------------------------------------------
    def _lfs_batch(self, repo_type: str, repo_id: str, tok: TokenInfo | None) -> _Response:
        repo = self._readable_repo(repo_type, repo_id, tok)
        body = self._json_body()
        if body.get("operation") != "upload":
            raise HubError(400, "Only the 'upload' LFS operation is supported")
        self._check_write(repo.namespace, tok)
        storage = self.hub.storage
        objects = []
        for obj in body.get("objects", []):
            oid, size = obj.get("oid"), obj.get("size")
            if not isinstance(oid, str) or not _SHA256_RE.fullmatch(oid) or not isinstance(size, int):
                objects.append({"oid": str(oid), "size": int(size or 0), "error": {"code": 422, "message": "bad oid"}})
                continue
            entry: dict[str, Any] = {"oid": oid, "size": size, "authenticated": True}
            if not storage.has_blob(oid):
                base = self._base_url()
                prefix = f"{_URL_PREFIXES[repo.repo_type]}/" if repo.repo_type in _URL_PREFIXES else ""
                entry["actions"] = {
                    "upload": {"href": f"{base}/__lfs__/{oid}?size={size}&key={self.hub._upload_key(oid)}"},
                    "verify": {"href": f"{base}/{prefix}{repo.repo_id}.git/info/lfs/objects/verify", "header": {}},
                }
            objects.append(entry)
        return _Response(200, {"transfer": "basic", "objects": objects}, content_type="application/vnd.git-lfs+json")

    def _lfs_put(self, oid: str, query: dict[str, list[str]]) -> _Response:
        key = query.get("key", [""])[0]
        if not _SHA256_RE.fullmatch(oid) or not hmac.compare_digest(key, self.hub._upload_key(oid)):
            raise HubError(403, "Invalid or expired upload URL")
        content = self._read_body()
        if hashlib.sha256(content).hexdigest() != oid:
            raise HubError(400, "Uploaded content does not match the announced sha256")
        expected = query.get("size", [None])[0]
        if expected is not None and int(expected) != len(content):
            raise HubError(400, "Uploaded content does not match the announced size")
        self.hub.storage.put_blob(content)
        return _Response(200, b"", headers={"ETag": f'"{oid}"'})

    def _lfs_verify(self, repo_type: str, repo_id: str, tok: TokenInfo | None) -> _Response:
        self._writable_repo(repo_type, repo_id, tok)
        body = self._json_body()
        oid = body.get("oid", "")
        storage = self.hub.storage
        if not storage.has_blob(oid) or storage.blob_path(oid).stat().st_size != body.get("size"):
            raise HubError(404, f"LFS object {oid} not found or of the wrong size")
        return _Response(200, {"message": "ok"})

    # -- endpoints: download --------------------------------------------------------------------------------
    def _resolve(
        self, method: str, repo_type: str, repo_id: str, revision: str, path: str, tok: TokenInfo | None
    ) -> _Response:
        storage = self.hub.storage
        with storage.lock:
            repo = self._readable_repo(repo_type, repo_id, tok)
            sha = storage.resolve(repo, revision)
            tree: dict[str, _Entry] = storage.read_commit(repo, sha)["tree"]
        entry = tree.get(path)
        if entry is None:
            raise HubError(
                404, f"Entry not found: {path}", error_code="EntryNotFound", headers={"X-Repo-Commit": sha}
            )
        headers = {
            "ETag": f'"{entry.etag}"',
            "X-Repo-Commit": sha,
            "Accept-Ranges": "bytes",
            "Content-Disposition": f"inline; filename*=UTF-8''{quote(path.rsplit('/', 1)[-1])}",
        }
        if entry.lfs:
            headers["X-Linked-Etag"] = f'"{entry.sha256}"'
            headers["X-Linked-Size"] = str(entry.size)
        content_type = "text/plain; charset=utf-8" if path.endswith((".json", ".md", ".txt", ".py")) else (
            "application/octet-stream"
        )
        start, end = 0, entry.size - 1
        status = 200
        range_header = self.headers.get("Range")
        if range_header and entry.size > 0:
            match = re.fullmatch(r"bytes=(\d*)-(\d*)", range_header.strip())
            if match and (match.group(1) or match.group(2)):
                if match.group(1):
                    start = int(match.group(1))
                    end = int(match.group(2)) if match.group(2) else entry.size - 1
                else:
                    start = max(entry.size - int(match.group(2)), 0)
                end = min(end, entry.size - 1)
                if start > end:
                    raise HubError(
                        416, "Requested range not satisfiable", headers={"Content-Range": f"bytes */{entry.size}"}
                    )
                status = 206
                headers["Content-Range"] = f"bytes {start}-{end}/{entry.size}"
        length = end - start + 1 if entry.size else 0
        if method == "HEAD":
            return _Response(status, b"", headers=headers, content_type=content_type, content_length=length)
        content = storage.read_blob(entry.sha256)[start : end + 1] if entry.size else b""
        return _Response(status, content, headers=headers, content_type=content_type)
