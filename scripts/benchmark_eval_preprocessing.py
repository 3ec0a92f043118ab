#!/usr/bin/env python
"""Evaluation preprocessing speed: the image processor (the one definition evaluation uses) against a plain torch
baseline (uint8 HWC -> float32 CHW, /255, ImageNet mean/std: what msaf_hf.data did before it used the processor).

    OMP_NUM_THREADS=1 python scripts/benchmark_eval_preprocessing.py [--height 1024 --width 2048 --repeats 20]

Both run round-robin in one process (median of repeats); the ratio is what matters on a shared machine.
"""

import argparse

import numpy as np
import PIL.Image
import torch
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from msaf_hf.benchmarking import time_callables
from msaf_hf.data import SegmentationEvalTransform, eval_image_processor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--height", type=int, default=1024)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    image = PIL.Image.fromarray(np.random.default_rng(0).integers(0, 256, (args.height, args.width, 3), dtype=np.uint8))
    label = np.zeros((args.height, args.width), np.int64)
    mean = torch.tensor(IMAGENET_DEFAULT_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_DEFAULT_STD).view(3, 1, 1)

    def baseline() -> torch.Tensor:
        pixels = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)
        return pixels.to(torch.float32).div_(255.0).sub_(mean).div_(std)

    transform = SegmentationEvalTransform(eval_image_processor())
    difference = (transform(image, label)[0] - baseline()).abs().max().item()
    processor_time, baseline_time = time_callables(
        [lambda: transform(image, label), baseline], repeats=args.repeats, warmup=3
    )
    print(f"{args.height}x{args.width} image, max |difference| {difference:.1e}")
    print(f"image processor: {processor_time.median_s * 1e3:.1f} ms  baseline: {baseline_time.median_s * 1e3:.1f} ms  "
          f"ratio {processor_time.median_s / baseline_time.median_s:.2f}")


if __name__ == "__main__":
    main()
