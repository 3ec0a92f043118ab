"""``msaf-hf check-data`` / ``python scripts/check_data.py``: what is in a dataset, before a training run finds out.

Takes the data flags of training (``DataArguments``) plus ``--split``, ``--num_labels``, ``--output_dir``. Reads every
example of the chosen split(s) once and prints examples per split, image sizes and modes, label values per class with
their pixel share, values outside the classes (and the first files holding them), image/label size mismatches,
unreadable files and suggested class weights (the ones ``--class_weights auto`` would use). Writes
``data_check.json``, ``class_frequencies.png`` (with matplotlib) and ``preview.png`` (images with their labels
overlaid) to ``--output_dir``.

Exit status: 0 when training could run on this data, 1 when it would stop at a bad example (or the training split
has no labelled pixels), 2 when the data cannot be opened at all.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data import DataArguments, load_segmentation_data
from ..data.check import SplitScan, scan_split
from ..data.class_weights import CLASS_WEIGHT_MAX, CLASS_WEIGHT_MIN, median_frequency_weights
from ..data.label_formats import ColorTable, color_table_from_config

logger = logging.getLogger(__name__)

REPORT_FILE = "data_check.json"
CHART_FILE = "class_frequencies.png"
PREVIEW_FILE = "preview.png"
_SPLITS = ("train", "validation", "all")


@dataclass
class CheckArguments:
    """Options of the dataset check (the data source is given with the training data flags)."""

    split: str = field(
        default="all", metadata={"help": "Which split to check: train, validation or all.", "choices": list(_SPLITS)}
    )
    num_labels: int | None = field(
        default=None,
        metadata={"help": "Number of classes (names class_0..), when the data names none; or pass --id2label_file."},
    )
    output_dir: str = field(default="data_check", metadata={"help": "Where data_check.json and the pictures go."})
    num_preview: int = field(default=8, metadata={"help": "Examples in the preview grid (0: no preview)."})
    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "With --label_colors model: the model (folder or Hub id) whose label2color reads the masks."},
    )
    no_progress: bool = field(default=False, metadata={"help": "Hide the progress bar."})


def parse_args(argv: Sequence[str] | None) -> tuple[DataArguments, CheckArguments]:
    from transformers import HfArgumentParser

    parser = HfArgumentParser((DataArguments, CheckArguments), description=__doc__.split("\n\n")[0])
    data_args, check_args = parser.parse_args_into_dataclasses(args=list(argv) if argv is not None else None)
    return data_args, check_args


def _print_scan(scan: SplitScan, id2label: dict[int, str], ignore_index: int) -> None:
    print(f"\n== split '{scan.split}': {scan.examples} examples")
    print("  image sizes (HxW): " + ", ".join(f"{k} x{v}" for k, v in scan.image_sizes.most_common(8))
          + (" ..." if len(scan.image_sizes) > 8 else ""))
    print("  image modes: " + ", ".join(f"{k} x{v}" for k, v in scan.image_modes.most_common()))
    shares = scan.frequencies.shares()
    print("  class pixels (share of labelled pixels, images holding the class):")
    for i in range(scan.frequencies.num_labels):
        print(f"    {i:3d} {id2label.get(i, f'class_{i}'):<24} {int(scan.frequencies.pixels[i]):>12d} "
              f"{100 * shares[i]:7.3f}%  {int(scan.frequencies.images[i])} images")
    print(f"  ignored pixels (value {ignore_index}): {scan.ignored_pixels}")
    for value, info in sorted(scan.outside_classes.items()):
        print(f"  value {value} is not a class: {info['pixels']} pixels in {info['examples']} examples, e.g. "
              f"{info['files']}")
    if scan.unmatched_files:
        print(f"  {scan.unmatched_files} image files without a label file (skipped)")
    for reason, items in scan.problems.items():
        print(f"  {reason}: {len(items)} example(s)")
        for item in items[:5]:
            print(f"    {item['name']}: {item['detail']}")


def _draw(scans: list[SplitScan], id2label: dict[int, str], palette_colors: dict[int, Any] | None,
          output_dir: Path) -> dict[str, str | None]:
    from ..visualization import label_colors
    from ..visualization.data_check import plot_class_frequencies, preview_grid

    names = [id2label[i] for i in range(len(id2label))]
    main = scans[0]
    chart = plot_class_frequencies(names, main.frequencies.shares(), output_dir / CHART_FILE,
                                   f"Class frequencies, split '{main.split}'")
    if chart is None:
        print("matplotlib is not installed (pip install 'msaf_hf[viz]'): no class-frequency chart.")
    preview = None
    samples = [sample for scan in scans for sample in scan.preview]
    if samples:
        palette = label_colors(id2label, palette_colors, len(id2label))
        limit = max(len(scan.preview) for scan in scans)
        preview = preview_grid([s[0] for s in samples[:limit]], [s[1] for s in samples[:limit]], palette,
                               output_dir / PREVIEW_FILE, [s[2] for s in samples[:limit]])
    return {"class_frequencies": str(chart) if chart else None, "preview": str(preview) if preview else None}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the check; returns the exit status (0 fine, 1 training would fail, 2 the data cannot be opened)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    data_args, check_args = parse_args(argv)
    if check_args.num_labels is not None and data_args.id2label_file is not None:
        print("error: give --num_labels or --id2label_file, not both.", file=sys.stderr)
        return 2
    id2label = {i: f"class_{i}" for i in range(check_args.num_labels)} if check_args.num_labels else None
    if check_args.split == "validation" and data_args.eval_split is None:
        print("error: --split validation with --eval_split none: nothing to check.", file=sys.stderr)
        return 2
    try:
        color_table = None
        if (data_args.label_colors or "").strip().lower() == "model":
            if check_args.model_name_or_path is None:
                raise ValueError("--label_colors model needs --model_name_or_path (the model whose colours to use).")
            from ..configuration_dsnet import DSNetConfig

            color_table = color_table_from_config(DSNetConfig.from_pretrained(check_args.model_name_or_path),
                                                  data_args.ignore_index, data_args.unknown_colors_to_ignore)
        data = load_segmentation_data(data_args, id2label=id2label, color_table=color_table)
    except (ValueError, OSError, ImportError) as err:
        print(f"error: cannot open the data: {err}", file=sys.stderr)
        return 2
    from tqdm.auto import tqdm

    datasets = []
    if check_args.split in ("train", "all"):
        datasets.append(data.train)
    if check_args.split in ("validation", "all"):
        if data.eval is None:
            if check_args.split == "validation":
                print("error: the data has no evaluation split (see --eval_split / --eval_image_dir).", file=sys.stderr)
                return 2
        else:
            datasets.append(data.eval)
    scans = []
    for dataset in datasets:
        progress = tqdm(range(len(dataset)), desc=f"checking {dataset.split}", disable=check_args.no_progress)
        scans.append(scan_split(dataset, progress=progress, num_preview=check_args.num_preview))

    id2label = data.id2label
    train_scan = next((scan for scan in scans if scan.split == "train"), scans[0])
    weights = (median_frequency_weights(train_scan.frequencies, id2label=id2label)
               if train_scan.frequencies.pixels.any() else None)
    failures = []
    for scan in scans:
        if scan.num_bad_examples and not data_args.skip_bad_examples:
            failures.append(f"split '{scan.split}' has {scan.num_bad_examples} bad example(s) (fix them, or pass "
                            "--skip_bad_examples to train without them)")
        if scan.num_bad_examples == scan.examples:
            failures.append(f"every example of split '{scan.split}' is bad")
    if not train_scan.frequencies.pixels.any():
        failures.append(f"split '{train_scan.split}' has no labelled pixels")

    for scan in scans:
        _print_scan(scan, id2label, data.ignore_index)
    if weights is not None:
        print(f"\nsuggested class weights (--class_weights auto: median-frequency balancing of split "
              f"'{train_scan.split}', clipped to [{CLASS_WEIGHT_MIN:g}, {CLASS_WEIGHT_MAX:g}]):")
        print("  " + json.dumps(weights))

    output_dir = Path(check_args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    decoder = getattr(data.train.source, "label_decoder", None)
    table = getattr(decoder, "__self__", None)
    colors = ({k: list(v) for k, v in table.colors.items() if k in id2label} if isinstance(table, ColorTable)
              else None)
    pictures = _draw(scans, id2label, colors, output_dir)
    report = {
        "ok": not failures,
        "failures": failures,
        "num_labels": len(id2label),
        "id2label": {str(k): v for k, v in id2label.items()},
        "splits": {scan.split: scan.to_dict(id2label, data.ignore_index) for scan in scans},
        "suggested_class_weights": weights,
        "unknown_colors_ignored": ({"pixels": table.unknown_pixels, "files": table.files_with_unknown}
                                   if isinstance(table, ColorTable) and table.unknown_to_ignore else None),
        "pictures": pictures,
    }
    (output_dir / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {output_dir / REPORT_FILE}")
    if failures:
        print("\nTraining would fail on this data:\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    print("\nOK: training can run on this data.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
