#!/usr/bin/env python
"""Regenerate the README's pictures (docs/camvid_*.{jpg,png}) from a CamVid model trained with the README's command.

    python docs/make_readme_images.py outputs/camvid-short/final [--data ../shared/data/camvid] [--index 20]

Runs scripts/evaluate.py (validation split, at the evaluation size the model was trained with) and
scripts/predict.py --fusion_maps on one validation image, then writes small copies into docs/.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "camvid"))
    parser.add_argument("--index", type=int, default=20, help="validation image shown")
    parser.add_argument("--eval_size", type=int, nargs=2, default=[180, 240])
    args = parser.parse_args()
    import pyarrow.parquet as pq

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        table = pq.read_table(next(Path(args.data).glob("validation-*.parquet")))
        row = table.slice(args.index, 1).to_pylist()[0]
        image_path = tmp / "images" / f"{Path(row['name']).stem}.png"
        image_path.parent.mkdir()
        Image.open(io.BytesIO(row["image"]["bytes"])).convert("RGB").save(image_path)
        python = sys.executable
        subprocess.run([python, str(ROOT / "scripts" / "evaluate.py"), "--model_name_or_path", args.model,
                        "--config", str(ROOT / "configuration" / "camvid.yaml"), "--dataset_name", args.data,
                        "--eval_size", *map(str, args.eval_size), "--num_workers", "0",
                        "--output_file", str(tmp / "eval" / "eval_results.json")], check=True)
        subprocess.run([python, str(ROOT / "scripts" / "predict.py"), args.model, str(image_path), "--output_dir",
                        str(tmp / "pred"), "--fusion-maps", "--device", "cpu", "--no-progress"], check=True)
        docs = ROOT / "docs"
        stem = image_path.stem
        overlay = Image.open(tmp / "pred" / f"{stem}_overlay.jpg")
        legend = Image.open(tmp / "pred" / "legend.png")
        canvas = Image.new("RGB", (overlay.width + legend.width + 8, max(overlay.height, legend.height)), "white")
        canvas.paste(overlay, (0, 0))
        canvas.paste(legend, (overlay.width + 8, 0))
        canvas.save(docs / "camvid_overlay.jpg", quality=85)
        tiles = [Image.open(tmp / "pred" / f"{stem}_fusion{i}.jpg").resize((240, 180), Image.Resampling.LANCZOS)
                 for i in (1, 2, 3)]
        scale = Image.open(tmp / "pred" / "fusion_scale.png")
        strip = Image.new("RGB", (3 * 240 + 2 * 4, 180 + 4 + scale.height), "white")
        for i, tile in enumerate(tiles):
            strip.paste(tile, (i * 244, 0))
        strip.paste(scale, ((strip.width - scale.width) // 2, 184))
        strip.save(docs / "camvid_fusion_maps.jpg", quality=85)
        matrix = Image.open(tmp / "eval" / "confusion_matrix.png").convert("RGB")
        matrix.thumbnail((560, 560), Image.Resampling.LANCZOS)
        matrix.save(docs / "camvid_confusion_matrix.png", optimize=True)
        results = json.loads((tmp / "eval" / "eval_results.json").read_text())
        print(f"mIoU {results['mean_iou']:.4f} on {results['num_images']} validation images; image {row['name']}")


if __name__ == "__main__":
    main()
