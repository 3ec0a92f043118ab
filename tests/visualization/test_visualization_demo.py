"""The demo: its callback, the Space that push_to_hub.py --space writes and pushes (loaded through remote code from
the local Hub test server), and the app driven in a real browser (Playwright with Debian's chromium)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT
from PIL import Image

from msaf_hf import DSNetForSemanticSegmentation, DSNetImageProcessor, load_preset

pytest.importorskip("gradio")

CHROMIUM = os.environ.get("MSAF_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = REPO_ROOT / "tests" / "artifacts"
NAMES = {0: "road", 1: "sky", 2: "car", 3: "tree"}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = DSNetForSemanticSegmentation(
        load_preset("dsnet", base_channels=4, num_labels=4, ohem_min_kept=64, id2label=NAMES)
    ).eval()
    with torch.no_grad():  # louder logits: several classes in the picture
        model.decode_head.classifier.weight.mul_(50.0)
    folder = tmp_path_factory.mktemp("demo-model")
    model.save_pretrained(folder)
    DSNetImageProcessor().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def street(tmp_path_factory) -> Path:
    """A 128x96 picture with structure (sky, facade, road) so that the overlay has something to show."""
    array = np.zeros((96, 128, 3), dtype=np.uint8)
    array[:30] = (120, 170, 230)
    array[30:60] = (150, 90, 60)
    array[60:] = (90, 90, 90)
    array[70:80, 40:80] = (200, 20, 20)
    path = tmp_path_factory.mktemp("images") / "street.png"
    Image.fromarray(array).save(path)
    return path


def test_demo_callback_gives_overlay_legend_shares_latency_and_fusion_maps(model_dir, street):
    import msaf_hf  # noqa: F401
    from msaf_hf.visualization.demo import build_demo, make_predict_fn
    from msaf_hf.visualization.inference import load_segmenter

    segmenter = load_segmenter(str(model_dir), device="cpu")
    predict = make_predict_fn(segmenter)
    image = Image.open(street)
    overlay, legend, shares, latency, maps = predict(image, 0.5, True)
    assert overlay.size == image.size
    assert legend.width > 50 and legend.height > 10
    assert set(shares) <= set(NAMES.values()) and len(shares) >= 2
    assert abs(sum(shares.values()) - 1.0) < 1e-9
    expected = segmenter.predict([image])[0].label_map
    for class_id, name in NAMES.items():
        assert shares.get(name, 0.0) == pytest.approx((expected == class_id).mean())
    assert "ms" in latency and "128×96" in latency
    assert len(maps) == 3 and all(m.size == image.size for m, _ in maps)
    assert predict(image, 0.5, False)[4] == []
    with pytest.raises(ValueError, match="Upload an image"):
        predict(None)
    assert build_demo(segmenter, examples=[str(street)]) is not None


def _load_script(name: str):
    """The command behind ``scripts/<name>.py`` (the script is a thin wrapper over it)."""
    return importlib.import_module(f"msaf_hf.commands.{ {'push_to_hub': 'push'}.get(name, name) }")


SPACE_CHECK = textwrap.dedent(
    """
    import importlib.abc, json, sys
    class Block(importlib.abc.MetaPathFinder):  # the Space has no msaf_hf
        def find_spec(self, name, path, target=None):
            if name == "msaf_hf" or name.startswith("msaf_hf."):
                raise ImportError("msaf_hf is not installed here")
    sys.meta_path.insert(0, Block())
    sys.path.insert(0, sys.argv[1])
    import torch
    torch.set_num_threads(1)
    from PIL import Image
    import app
    overlay, legend, shares, latency, maps = app.predict(Image.open(sys.argv[2]), 0.5, True)
    print(json.dumps({"module": type(app.segmenter.model).__module__, "overlay": list(overlay.size),
                      "maps": [list(m.size) for m, _ in maps], "shares": shares, "examples": app.EXAMPLES,
                      "blocks": type(app.demo).__name__}))
    """
)


@pytest.mark.slow
def test_push_to_hub_space_is_a_working_gradio_space_loading_the_model_by_remote_code(
    model_dir, street, tmp_path, local_hub
):
    from huggingface_hub import SpaceCard

    token = local_hub.add_token("alice")
    push = _load_script("push_to_hub")
    assert (
        push.main(
            [
                str(model_dir),
                "alice/dsnet-tiny",
                "--space",
                "alice/dsnet-demo",
                "--space-example",
                str(street),
                "--endpoint",
                local_hub.url,
                "--token",
                token,
            ]
        )
        == 0
    )
    model_files = local_hub.repo_files("alice/dsnet-tiny")
    assert {"modeling_dsnet.py", "configuration_dsnet.py", "config.json"} <= set(model_files)
    files = local_hub.repo_files("alice/dsnet-demo", repo_type="space")
    assert {
        "app.py",
        "requirements.txt",
        "README.md",
        "dsnet_demo/__init__.py",
        "dsnet_demo/demo.py",
        "dsnet_demo/inference.py",
        "dsnet_demo/rendering.py",
        "dsnet_demo/palettes.py",
        "examples/street.png",
    } <= set(files)
    card = SpaceCard(files["README.md"].decode())
    assert card.data.sdk == "gradio" and card.data.app_file == "app.py"
    assert card.data.models == ["alice/dsnet-tiny"] and card.data.sdk_version
    assert "alice/dsnet-tiny" in files["app.py"].decode() and "trust_remote_code=True" in files["app.py"].decode()
    requirements = files["requirements.txt"].decode()
    assert "transformers" in requirements and "msaf_hf" not in requirements

    space = tmp_path / "space"
    for name, content in files.items():
        (space / name).parent.mkdir(parents=True, exist_ok=True)
        (space / name).write_bytes(content)
    (tmp_path / "check.py").write_text(SPACE_CHECK)
    env = local_hub.client_env(token=token, hf_home=tmp_path / "space-home")
    env["HF_MODULES_CACHE"] = str(tmp_path / "space-home" / "modules")
    env["PYTHONPATH"] = ""
    env["GRADIO_ANALYTICS_ENABLED"] = "False"
    result = subprocess.run(
        [sys.executable, str(tmp_path / "check.py"), str(space), str(street)],
        cwd=space,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["module"].startswith("transformers_modules")  # the model repo's own code
    assert report["overlay"] == [128, 96] and report["maps"] == [[128, 96]] * 3
    assert set(report["shares"]) <= set(NAMES.values())
    assert report["examples"] and report["examples"][0].endswith("street.png")
    assert report["blocks"] == "Blocks"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _browser_available() -> str | None:
    """Why the browser test cannot run here (None if it can). In CI (MSAF_REQUIRE_BROWSER=1) it must run."""
    if importlib.util.find_spec("playwright") is None:
        return "playwright is not installed (pip install -e '.[test]')"
    if not Path(CHROMIUM).is_file():
        return f"{CHROMIUM} is missing (apt-get install chromium)"
    return None


@pytest.mark.slow
def test_demo_in_a_real_browser(model_dir, street, tmp_path):
    reason = _browser_available()
    if reason is not None:
        if os.environ.get("MSAF_REQUIRE_BROWSER") == "1":
            pytest.fail(f"the browser test must run here: {reason}")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    started = time.perf_counter()
    port = _free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "OMP_NUM_THREADS": "1"}
    log = open(tmp_path / "demo.log", "w")
    server = subprocess.Popen(
        [
            sys.executable,
            str(REPO_ROOT / "scripts" / "demo.py"),
            str(model_dir),
            "--port",
            str(port),
            "--device",
            "cpu",
            "--examples",
            str(street),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail("the demo did not start:\n" + (tmp_path / "demo.log").read_text()[-3000:])
            time.sleep(0.5)

        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        screenshot = ARTIFACTS / "demo_browser.png"
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 1100})
                page.goto(url, timeout=60_000)
                page.set_input_files("#input-image input[type=file]", str(street), timeout=60_000)
                overlay = page.wait_for_selector("#overlay img", state="visible", timeout=60_000)
                legend = page.wait_for_selector("#legend img", state="visible", timeout=60_000)
                page.wait_for_function(  # the pictures have loaded, at their real sizes
                    "() => ['#overlay img', '#legend img'].every(s => {const i = document.querySelector(s);"
                    " return i && i.complete && i.naturalWidth > 0;})",
                    timeout=60_000,
                )
                size = overlay.evaluate("img => [img.naturalWidth, img.naturalHeight]")
                assert size == [128, 96]  # the overlay has the image's size
                assert legend.evaluate("img => img.naturalWidth") > 50
                latency = page.inner_text("#latency")
                assert "Latency" in latency and "ms" in latency
                shares = page.inner_text("#class-shares")
                assert any(name in shares for name in NAMES.values())
                # the fusion maps on their toggle
                page.click("#fusion-toggle input[type=checkbox]")
                page.wait_for_function(
                    "() => document.querySelectorAll('#fusion-maps img').length >= 3", timeout=60_000
                )
                page.screenshot(path=str(screenshot), full_page=True)
            finally:
                browser.close()
        assert screenshot.is_file() and screenshot.stat().st_size > 10_000
        shutil.copy(screenshot, tmp_path / screenshot.name)
        print(f"browser test: {time.perf_counter() - started:.1f} s; screenshot: {screenshot}")
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def test_push_to_hub_dry_run_lists_the_space_files(model_dir, street, capsys):
    push = _load_script("push_to_hub")
    assert (
        push.main([str(model_dir), "me/dsnet", "--space", "me/dsnet-demo", "--space-example", str(street), "--dry-run"])
        == 0
    )
    printed = capsys.readouterr().out
    space_part = printed.split("Space me/dsnet-demo files:")[1]
    for name in ("app.py", "requirements.txt", "README.md", "dsnet_demo/demo.py", "examples/street.png"):
        assert name in space_part
    assert (
        push.main([str(model_dir), "me/dsnet", "--space", "me/x", "--space-example", "missing.png", "--dry-run"]) == 2
    )
