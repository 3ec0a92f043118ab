"""End to end against the local Hub-protocol server: train with pushing on, then load by repo id from a fresh
cache, with and without msaf_hf importable, at a pinned revision and offline; pushes that fail during training;
private repositories."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import REPO_ROOT

TRAIN = [
    sys.executable, str(REPO_ROOT / "scripts" / "train.py"),
    "--config", str(REPO_ROOT / "configuration" / "quickstart.yaml"),
    "--config_overrides", "base_channels=4,ohem_min_kept=64",
    "--synthetic_num_train", "8", "--synthetic_num_eval", "2", "--synthetic_image_size", "32", "32",
    "--crop_size", "32", "32", "--per_device_train_batch_size", "2", "--per_device_eval_batch_size", "2",
    "--max_steps", "4", "--eval_steps", "2", "--checkpointing_steps", "2", "--logging_steps", "2",
    "--disable_tqdm", "true",
]

LOAD_SCRIPT = textwrap.dedent(
    """
    import importlib.abc, sys
    mode, repo_id, revision, out = sys.argv[1:5]
    if mode == "without-msaf_hf":
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name == "msaf_hf" or name.startswith("msaf_hf."):
                    raise ImportError("msaf_hf is not installed here")
        sys.meta_path.insert(0, Block())
    else:
        import msaf_hf  # noqa: F401
    import torch
    torch.set_num_threads(2)
    from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation
    kwargs = {"trust_remote_code": True} if mode == "without-msaf_hf" else {}
    if revision != "-":
        kwargs["revision"] = revision
    model = AutoModelForSemanticSegmentation.from_pretrained(repo_id, **kwargs).eval()
    AutoImageProcessor.from_pretrained(repo_id, **kwargs)
    x = torch.linspace(-2, 2, 2 * 3 * 32 * 32).reshape(2, 3, 32, 32)
    with torch.no_grad():
        torch.save({"logits": model(x).logits, "module": type(model).__module__}, out)
    """
)


def _load(hub, tmp_path: Path, mode: str, repo_id: str, *, hf_home: Path, revision: str = "-", token=None,
          offline: bool = False) -> subprocess.CompletedProcess:
    script = tmp_path / "load.py"
    script.write_text(LOAD_SCRIPT)
    env = hub.client_env(token=token, hf_home=hf_home, offline=offline)
    env["HF_MODULES_CACHE"] = str(hf_home / "modules")
    if mode == "without-msaf_hf":
        env["PYTHONPATH"] = ""
    out = tmp_path / f"{mode}-{revision[:8]}-{offline}.pt"
    result = subprocess.run([sys.executable, str(script), mode, repo_id, revision, str(out)],
                            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    result.out = out
    return result


def _local_logits(folder: Path) -> torch.Tensor:
    from transformers import AutoModelForSemanticSegmentation

    import msaf_hf  # noqa: F401

    model = AutoModelForSemanticSegmentation.from_pretrained(folder).eval()
    x = torch.linspace(-2, 2, 2 * 3 * 32 * 32).reshape(2, 3, 32, 32)
    with torch.no_grad():
        return model(x).logits


def _assert_same(a: torch.Tensor, b: torch.Tensor) -> None:
    # same weights; separate processes may pick other float32 kernels, so allow rounding-level differences
    assert (a - b).abs().max() <= 1e-6 * b.abs().max()


@pytest.mark.slow
def test_train_push_and_load_by_repo_id(local_hub, tmp_path):
    token = local_hub.add_token("alice")
    output_dir = tmp_path / "run"
    env = local_hub.client_env(token=token, hf_home=tmp_path / "trainer-home")
    result = subprocess.run(
        TRAIN + ["--output_dir", str(output_dir), "--push_to_hub", "true", "--hub_model_id", "alice/dsnet-e2e",
                 "--hub_strategy", "every_save"],
        capture_output=True, text=True, env=env, timeout=600,
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0, log
    assert f"{local_hub.url}/alice/dsnet-e2e/commit/" in log  # the final push is awaited and its URL printed
    assert token not in log

    files = set(local_hub.repo_files("alice/dsnet-e2e"))
    assert {"model.safetensors", "config.json", "preprocessor_config.json", "README.md",
            "configuration_dsnet.py", "modeling_dsnet.py", "image_processing_dsnet.py"} <= files
    assert not any(name.startswith("checkpoint-") or name.endswith((".bin", ".pkl")) for name in files)
    for stored in local_hub.stored_files():
        assert token.encode() not in Path(stored).read_bytes()

    expected = _local_logits(output_dir / "final")
    # with msaf_hf importable, from a fresh cache
    home = tmp_path / "user-home"
    with_pkg = _load(local_hub, tmp_path, "with-msaf_hf", "alice/dsnet-e2e", hf_home=home)
    assert with_pkg.returncode == 0, with_pkg.stderr
    data = torch.load(with_pkg.out)
    assert data["module"] == "msaf_hf.modeling_dsnet"
    _assert_same(data["logits"], expected)
    # without msaf_hf: the pushed remote code
    without = _load(local_hub, tmp_path, "without-msaf_hf", "alice/dsnet-e2e", hf_home=tmp_path / "bare-home")
    assert without.returncode == 0, without.stderr
    data = torch.load(without.out)
    assert data["module"].startswith("transformers_modules")
    _assert_same(data["logits"], expected)
    # offline from the cache the first load filled
    offline = _load(local_hub, tmp_path, "with-msaf_hf", "alice/dsnet-e2e", hf_home=home, offline=True)
    assert offline.returncode == 0, offline.stderr
    _assert_same(torch.load(offline.out)["logits"], expected)

    # at a pinned revision: every_save pushed intermediate snapshots; the oldest one with weights differs
    from huggingface_hub import HfApi

    api = HfApi(endpoint=local_hub.url, token=token)
    commits = api.list_repo_commits("alice/dsnet-e2e")
    assert len(commits) >= 3  # repo creation, at least one save, the final push
    with_weights = [c.commit_id for c in commits
                    if "model.safetensors" in api.list_repo_files("alice/dsnet-e2e", revision=c.commit_id)]
    oldest = with_weights[-1]
    pinned = _load(local_hub, tmp_path, "with-msaf_hf", "alice/dsnet-e2e", hf_home=tmp_path / "pin-home",
                   revision=oldest)
    assert pinned.returncode == 0, pinned.stderr
    assert not torch.allclose(torch.load(pinned.out)["logits"], expected)  # an earlier state of the weights


@pytest.mark.slow
def test_failed_pushes_never_stop_training(local_hub, tmp_path):
    token = local_hub.add_token("alice")
    # the first commits fail with server errors; the final push succeeds once the Hub recovers
    local_hub.fail_next(2, status=503, path_contains="/commit/")
    output_dir = tmp_path / "run"
    result = subprocess.run(
        TRAIN + ["--output_dir", str(output_dir), "--push_to_hub", "true", "--hub_model_id", "alice/flaky",
                 "--hub_strategy", "every_save"],
        capture_output=True, text=True, env=local_hub.client_env(token=token), timeout=600,
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0, log
    assert "push" in log.lower() and "503" in log, log  # the failure was logged, with its cause
    assert (output_dir / "final" / "model.safetensors").is_file()
    assert "model.safetensors" in local_hub.repo_files("alice/flaky")


@pytest.mark.slow
def test_hub_down_during_training_keeps_local_results(local_hub, tmp_path):
    token = local_hub.add_token("alice")
    env = local_hub.client_env(token=token)
    local_hub.stop()  # nothing listens there any more
    output_dir = tmp_path / "run"
    result = subprocess.run(
        TRAIN + ["--output_dir", str(output_dir), "--push_to_hub", "true", "--hub_model_id", "alice/offline",
                 "--hub_strategy", "end"],
        capture_output=True, text=True, env=env, timeout=600,
    )
    # Training and the local results are unaffected, but the command fails: the model did not reach the Hub.
    assert result.returncode == 1, result.stdout + result.stderr
    assert "final push to the Hub failed" in result.stderr and "msaf-hf push" in result.stderr
    assert (output_dir / "final" / "model.safetensors").is_file()
    assert (output_dir / "final" / "config.json").is_file()


@pytest.mark.slow
def test_private_repo_is_refused_without_token(local_hub, tmp_path):
    import msaf_hf
    from msaf_hf.hub import push_folder_to_hub

    token = local_hub.add_token("alice")
    folder = tmp_path / "model"
    msaf_hf.DSNetForSemanticSegmentation(msaf_hf.load_preset("dsnet", base_channels=4, num_labels=3)).save_pretrained(folder)  # noqa: E501
    msaf_hf.DSNetImageProcessor().save_pretrained(folder)
    push_folder_to_hub(folder, "alice/secret", token=token, private=True, endpoint=local_hub.url)

    refused = _load(local_hub, tmp_path, "with-msaf_hf", "alice/secret", hf_home=tmp_path / "anon")
    assert refused.returncode != 0
    assert "alice/secret" in refused.stderr and ("401" in refused.stderr or "not found" in refused.stderr.lower()
                                                 or "RepositoryNotFound" in refused.stderr)
    allowed = _load(local_hub, tmp_path, "with-msaf_hf", "alice/secret", hf_home=tmp_path / "auth", token=token)
    assert allowed.returncode == 0, allowed.stderr


@pytest.mark.skipif(
    not (os.environ.get("MSAF_HF_REAL_HUB_TESTS") == "1" and os.environ.get("HF_TOKEN")),
    reason="real-Hub tests run only with MSAF_HF_REAL_HUB_TESTS=1 and HF_TOKEN set",
)
def test_real_hub_round_trip(tmp_path):
    from huggingface_hub import HfApi

    import msaf_hf
    from msaf_hf.hub import push_folder_to_hub

    api = HfApi()
    repo_id = f"{api.whoami()['name']}/msaf-hf-test-{os.getpid()}"
    folder = tmp_path / "model"
    model = msaf_hf.DSNetForSemanticSegmentation(msaf_hf.load_preset("dsnet", base_channels=4, num_labels=3)).eval()
    model.save_pretrained(folder)
    msaf_hf.DSNetImageProcessor().save_pretrained(folder)
    try:
        push_folder_to_hub(folder, repo_id, private=True)
        from transformers import AutoModelForSemanticSegmentation

        loaded = AutoModelForSemanticSegmentation.from_pretrained(repo_id, cache_dir=tmp_path / "cache").eval()
        x = torch.randn(2, 3, 32, 32)
        with torch.no_grad():
            assert torch.equal(model(x).logits, loaded(x).logits)
    finally:
        api.delete_repo(repo_id, missing_ok=True)


@pytest.mark.slow
def test_model_and_processor_push_to_hub(local_hub_client, tmp_path):
    import msaf_hf

    token = local_hub_client.add_token("alice")
    model = msaf_hf.DSNetForSemanticSegmentation(msaf_hf.load_preset("dsnet", base_channels=4, num_labels=3)).eval()
    model.push_to_hub("alice/direct", token=token)
    msaf_hf.DSNetImageProcessor().push_to_hub("alice/direct", token=token)
    files = set(local_hub_client.repo_files("alice/direct"))
    assert {"model.safetensors", "config.json", "preprocessor_config.json", "configuration_dsnet.py",
            "modeling_dsnet.py", "image_processing_dsnet.py"} <= files
    loaded = _load(local_hub_client, tmp_path, "without-msaf_hf", "alice/direct", hf_home=tmp_path / "home")
    assert loaded.returncode == 0, loaded.stderr
    x = torch.linspace(-2, 2, 2 * 3 * 32 * 32).reshape(2, 3, 32, 32)
    with torch.no_grad():
        _assert_same(torch.load(loaded.out)["logits"], model(x).logits)
