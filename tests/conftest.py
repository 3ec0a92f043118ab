"""Shared test helpers: the read-only ../shared folder (skipped where absent) and tiny DSNet configs."""

from __future__ import annotations

import json
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


def require_reference() -> Path:
    if not (REFERENCE / "DSNET-ARCHITECTURE.md").is_file():
        pytest.skip(f"the published-code fixtures are not available ({REFERENCE} is absent)")
    return REFERENCE


def require_camvid() -> Path:
    if not (CAMVID / "README.md").is_file():
        pytest.skip(f"the CamVid dataset is not available ({CAMVID} is absent)")
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
