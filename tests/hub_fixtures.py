"""Pytest fixtures around `LocalHub` (tests/hub_server.py).

Import them into a ``conftest.py`` (or a test module)::

    from hub_fixtures import local_hub, local_hub_client  # noqa: F401

* ``local_hub``: a started `LocalHub` with its storage in a temporary directory, and the
  in-process huggingface_hub client isolated from the developer's credentials (``HF_TOKEN`` unset,
  token files redirected to the temporary directory). Pass ``endpoint=local_hub.url`` to
  ``HfApi`` / ``hf_hub_download`` / ``snapshot_download``, or use ``local_hub.client_env(...)``
  as the environment of a subprocess.
* ``local_hub_client``: ``local_hub`` plus huggingface_hub's module constants patched so that
  code using the *default* endpoint and cache in this process (``HfApi()``, ``hf_hub_download``,
  ``transformers``' ``from_pretrained``) talks to the local server and caches under a temporary
  ``HF_HOME``. A subprocess with ``client_env`` remains the most faithful option, since some
  libraries copy these constants at import time.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

try:  # imported as part of a `tests` package
    from .hub_server import LocalHub
except ImportError:  # imported with tests/ on sys.path (pytest's default rootdir-less layout)
    from hub_server import LocalHub

__all__ = ["local_hub", "local_hub_client"]

_TOKEN_ENV_VARS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "HF_ENDPOINT")


@pytest.fixture
def local_hub(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalHub]:
    """A running `LocalHub` on 127.0.0.1, with the in-process client's credentials isolated."""
    from huggingface_hub import constants

    home = tmp_path_factory.mktemp("hf-home")
    for var in _TOKEN_ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(home / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(home / "stored_tokens"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    hub = LocalHub(root_dir=tmp_path_factory.mktemp("localhub"))
    hub.start()
    try:
        yield hub
    finally:
        hub.close()


@pytest.fixture
def local_hub_client(
    local_hub: LocalHub, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[LocalHub]:
    """`local_hub` with huggingface_hub's default endpoint and cache pointed at it (in-process)."""
    from huggingface_hub import constants

    home = tmp_path_factory.mktemp("hf-client-home")
    url = local_hub.url
    monkeypatch.setenv("HF_ENDPOINT", url)
    monkeypatch.setattr(constants, "ENDPOINT", url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HOME", str(home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setattr(constants, "HUGGINGFACE_HUB_CACHE", str(home / "hub"), raising=False)
    # transformers keeps one HfApi, with the endpoint of its first use: a stale one points at an earlier test's
    # (stopped) server, so each test starts without it.
    try:
        import transformers.utils.hub as transformers_hub
    except ImportError:
        pass
    else:
        monkeypatch.setattr(transformers_hub, "_hf_api", None, raising=False)
    yield local_hub
