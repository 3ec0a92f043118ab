"""scripts/sliding_window_study.py (README, "Large images"): every method is exactly whole-image inference when one
window covers the image, the whole-image pools reach the windows, and the patched pool is always put back."""

from __future__ import annotations

import importlib.util
import io
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
import torch.nn.functional as F

from msaf_hf import DSNetForSemanticSegmentation, DSNetImageProcessor, load_preset

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "sliding_window_study.py"
spec = importlib.util.spec_from_file_location("sliding_window_study", SCRIPT)
study = importlib.util.module_from_spec(spec)
spec.loader.exec_module(study)

NUM_LABELS, VOID = 3, 3
HEIGHT, WIDTH = 48, 64


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    PIL.Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> tuple[Path, Path]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = tmp_path_factory.mktemp("study")
    torch.manual_seed(0)
    model = DSNetForSemanticSegmentation(load_preset("dsnet", base_channels=4, num_labels=NUM_LABELS)).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics: logits vary over the image and between windows
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
    model.save_pretrained(root / "model")
    DSNetImageProcessor().save_pretrained(root / "model")
    rng = np.random.default_rng(0)
    rows = [
        {
            "image": {"bytes": png_bytes(rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)), "path": None},
            "label": {"bytes": png_bytes(rng.integers(0, VOID + 1, (HEIGHT, WIDTH), dtype=np.uint8)), "path": None},
        }
        for _ in range(3)
    ]
    (root / "data").mkdir()
    pq.write_table(pa.Table.from_pylist(rows), root / "data" / "validation-00000-of-00001.parquet")
    return root / "model", root / "data"


def test_a_window_covering_the_image_gives_whole_image_inference_for_every_method(folders, capsys):
    model, data = folders
    results = study.main([str(model), str(data), "--window", str(HEIGHT), str(WIDTH), "--void_label", str(VOID)])
    assert list(results) == list(study.METHODS)
    assert all(value == results["whole"] for value in results.values()), results
    table = capsys.readouterr().out
    assert "| method (3 images) |" in table and "| pools:all |" in table


def test_smaller_windows_see_the_whole_images_pools(folders):
    """With the whole image's pooled values handed in, a window's 1x1 pools equal the whole image's (and its own
    differ): the diagnostic really replaces what the window would pool itself."""
    model = DSNetForSemanticSegmentation.from_pretrained(folders[0]).eval()
    image = torch.randn(1, 3, HEIGHT, WIDTH)
    recorder = study.WholeImagePools()
    crop = image[..., :24, :32]

    def global_pools_of_window(replay: bool) -> list[torch.Tensor]:
        seen: list[torch.Tensor] = []
        installed = F.adaptive_avg_pool2d  # the recorder's pool
        F.adaptive_avg_pool2d = lambda x, size: seen.append(installed(x, size)) or seen[-1]
        try:
            if replay:
                recorder.window_logits(model, crop, 0, 0, grids=True)
            else:
                model(pixel_values=crop)
        finally:
            F.adaptive_avg_pool2d = installed
        return [pooled for pooled in seen if pooled.shape[-2:] == (1, 1)]

    with torch.no_grad(), recorder.installed():
        recorder.record(model, image)
        replayed, own = global_pools_of_window(True), global_pools_of_window(False)
    whole = [pooled for _, pooled in recorder.recorded if pooled.shape[-2:] == (1, 1)]
    assert len(replayed) == len(own) == len(whole) > 0
    for got, theirs, expected in zip(replayed, own, whole, strict=True):
        torch.testing.assert_close(got, expected.expand_as(got))
        assert not torch.allclose(theirs, expected.expand_as(theirs))  # the window alone pools something else


def test_the_pool_is_put_back_even_when_the_model_fails():
    original = F.adaptive_avg_pool2d
    recorder = study.WholeImagePools()
    with pytest.raises(RuntimeError), recorder.installed():
        raise RuntimeError("model failed")
    assert F.adaptive_avg_pool2d is original


def test_a_folder_without_the_split_is_a_clear_error(folders, tmp_path):
    with pytest.raises(SystemExit, match=r"no validation-\*\.parquet in .*Hub-layout dataset folder"):
        study.main([str(folders[0]), str(tmp_path)])


def test_bad_windows_are_errors_naming_them(folders):
    with pytest.raises(ValueError, match="stride"):
        study.main([str(folders[0]), str(folders[1]), "--window", "16", "16", "--stride", "32", "32"])
