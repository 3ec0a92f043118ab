"""Shared test helpers: the read-only ../shared folder (skipped where absent; a failure in CI) and tiny DSNet
configs."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"
REFERENCE = SHARED / "reference"
CAMVID = SHARED / "data" / "camvid"
PARITY_CASES = ["dsnet_head128_full", "dsnet_head64_tiny", "dsnet_head256_tiny", "dsnet_m_tiny"]

from hub_fixtures import local_hub, local_hub_client  # noqa: E402,F401  (the local Hub-protocol server)

torch.set_num_threads(2)


def in_ci() -> bool:
    """Whether the tests run in CI (``CI=true``, as CI services set it)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def missing_input(reason: str, *, allow_module_level: bool = False) -> None:
    """A test input is missing: skip with ``reason`` on a developer's machine, fail in CI (where every input must be
    present, so that a suite never passes by skipping)."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: missing test inputs are failures)", pytrace=False)
    pytest.skip(reason, allow_module_level=allow_module_level)


def require_reference() -> Path:
    if not (REFERENCE / "DSNET-ARCHITECTURE.md").is_file():
        missing_input(f"the published-code fixtures are not available ({REFERENCE} is absent)")
    return REFERENCE


def require_camvid() -> Path:
    if not (CAMVID / "README.md").is_file():
        missing_input(f"the CamVid dataset is not available ({CAMVID} is absent)")
    return CAMVID


def load_fixture(case: str) -> tuple[dict[str, torch.Tensor], dict]:
    """The inputs/outputs the published code computed for one parity case, and its metadata."""
    from safetensors import safe_open

    with safe_open(str(require_reference() / f"{case}_io.safetensors"), "pt") as handle:
        meta = json.loads(handle.metadata()["meta"])
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    return tensors, meta


@pytest.fixture
def tiny_config():
    """A DSNet small enough for unit tests (base width 4, 5 classes)."""
    from msaf_hf import load_preset

    return load_preset("dsnet", base_channels=4, num_labels=5, ohem_min_kept=64)


@pytest.fixture
def one_thread_and_fresh_accelerate_state():
    """For modules that build Accelerators: one torch thread (tiny models gain nothing from threads, and OpenMP
    threads slow to a crawl on a busy 2-core machine) and a fresh AcceleratorState after each test (every train()
    and evaluation builds its own Accelerator)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(True)


@pytest.fixture
def transformers_log_messages():
    """The messages transformers logs during a test (its loggers do not propagate to pytest's caplog)."""
    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    handler = Collect(level=logging.WARNING)
    library_logger = logging.getLogger("transformers")
    library_logger.addHandler(handler)
    yield messages
    library_logger.removeHandler(handler)
