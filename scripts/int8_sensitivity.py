#!/usr/bin/env python
"""Which parts of DSNet break under int8? The study behind the default int8 recipe (docs/int8.md).

    OMP_NUM_THREADS=2 python scripts/int8_sensitivity.py /work/notes/camvid-model/final \
        --dataset ../shared/data/camvid --void_labels 11 --eval_size 180 240 --calibration_samples 64

On OpenVINO (converted once, quantised with NNCF for each configuration) and a validation split it prints:
1. per-layer error: the relative L2 error of every convolution's output in the all-int8 model against float32,
   summed up per block (where the error appears and how it accumulates);
2. for each block: the mIoU with only that block quantised, and with everything but that block quantised;
3. the named recipes of msaf_hf.engines.quantization (mIoU, and how many nodes they keep in float32).
`--json PATH` writes every figure.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from msaf_hf.data import DataArguments, load_split
from msaf_hf.engines.exporting import convert_openvino, deployed_copy, load_image_processor
from msaf_hf.engines.quantization import (
    QUANTIZATION_SCHEMES,
    QuantizationScheme,
    load_calibration_images,
    openvino_node_modules,
    quantize,
)
from msaf_hf.evaluation.metrics import SegmentationConfusionMatrix
from msaf_hf.image_processing_dsnet import DSNetImageProcessor
from msaf_hf.modeling_dsnet import DSNetForSemanticSegmentation

# The blocks of DSNet, as module-path patterns (relative to DSNetForSemanticSegmentation).
BLOCKS = {
    "stem.0 (first conv)": r"dsnet\.stem\.0(\..*)?",
    "stem.1 + shared stages + skip": r"dsnet\.(stem\.1|shared_stage1|shared_stage2|skip_stage)(\..*)?",
    "context_branch": r"dsnet\.context_branch(\..*)?",
    "detail_branch": r"dsnet\.detail_branch(\..*)?",
    "context_projections": r"dsnet\.context_projections(\..*)?",
    "MSAF attention convs (local, global, context)": r"dsnet\.fusions\.\d+\..*",
    "MSAF weighting (sigmoid, products, sums)": r"dsnet\.fusions\.\d+",
    "pyramid + projection": r"dsnet\.pyramid(_projection)?(\..*)?",
    "decode_head.conv": r"decode_head\.(input_act|conv)(\..*)?",
    "decode_head.classifier": r"decode_head\.classifier(\..*)?",
}


def miou(compiled, dataset) -> float:
    """mIoU of a compiled OpenVINO model over a dataset (logits upsampled bilinearly to the label size)."""
    num_labels = dataset.num_labels if hasattr(dataset, "num_labels") else None
    metric = None
    request = compiled.create_infer_request()
    for index in range(len(dataset)):
        example = dataset[index]
        request.infer({0: example["pixel_values"].unsqueeze(0).numpy()})
        logits = torch.from_numpy(request.get_output_tensor(0).data.copy())
        labels = example["labels"].unsqueeze(0)
        if metric is None:
            metric = SegmentationConfusionMatrix(num_labels or logits.shape[1], 255)
        prediction = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False).argmax(1)
        metric.update(prediction, labels)
    return float(metric.compute()["mean_iou"])


def per_layer_error(ov, core, fp32_graph, int8_graph, images, node_modules) -> dict[str, list[float]]:
    """Relative L2 error of each float32 convolution's output in the int8 graph, keyed by module path."""
    fp32_copy, int8_copy = fp32_graph.clone(), int8_graph.clone()
    # Compare each convolution after its bias (fast bias correction changes the bias to cancel int8's shift of
    # the mean, so the bias-free convolution output would overstate the error).
    names = []
    for op in fp32_copy.get_ordered_ops():
        if op.get_type_name() != "Convolution":
            continue
        consumers = [t.get_node() for t in op.output(0).get_target_inputs()]
        biased = len(consumers) == 1 and consumers[0].get_type_name() == "Add"
        names.append((consumers[0] if biased else op).get_friendly_name())
    int8_ops = {op.get_friendly_name(): op for op in int8_copy.get_ops()}
    names = [n for n in names if n in int8_ops]
    fp32_ops = {op.get_friendly_name(): op for op in fp32_copy.get_ops()}
    # A model whose outputs are exactly these tensors, in this order (add_outputs would skip one that is already a
    # result, such as the classifier's, and shift the indices).
    probe_a = ov.Model([fp32_ops[n].output(0) for n in names], fp32_copy.get_parameters())
    probe_b = ov.Model([int8_ops[n].output(0) for n in names], int8_copy.get_parameters())
    a = core.compile_model(probe_a, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    b = core.compile_model(probe_b, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    errors: dict[str, list[float]] = {n: [] for n in names}
    for image in images:
        out_a, out_b = a(image.numpy()), b(image.numpy())
        for i, n in enumerate(names):
            ref, got = out_a[i], out_b[i]
            errors[n].append(float(np.linalg.norm(got - ref) / max(np.linalg.norm(ref), 1e-12)))
    return {f"{node_modules.get(n, '')}": errors[n] for n in names}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--void_labels", type=int, nargs="*", default=None)
    parser.add_argument("--id2label_file", default=None, help="not needed (ignored): the model's classes are used")
    parser.add_argument("--eval_split", default="validation")
    parser.add_argument("--calibration_split", default="train")
    parser.add_argument("--calibration_samples", type=int, default=64)
    parser.add_argument("--eval_size", type=int, nargs=2, default=None)
    parser.add_argument("--max_eval_samples", type=int, default=None)
    parser.add_argument("--skip_blocks", action="store_true", help="only the per-layer error and the recipes")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    try:
        import openvino as ov
    except ImportError as error:
        raise SystemExit("int8_sensitivity.py needs OpenVINO: pip install 'msaf_hf[openvino]'") from error
    core = ov.Core()
    torch.manual_seed(0)

    model = DSNetForSemanticSegmentation.from_pretrained(args.model).eval()
    size = tuple(args.eval_size) if args.eval_size else None
    # The checkpoint's preprocessing (its size unless --eval_size overrides it) for calibration and evaluation alike.
    processor = load_image_processor(args.model) or DSNetImageProcessor()
    if size is not None:
        processor.do_resize, processor.size = True, {"height": size[0], "width": size[1]}
    calibration = load_calibration_images(args.dataset, processor, split=args.calibration_split,
                                          num_samples=args.calibration_samples)
    options = dict(num_workers=0, max_eval_samples=args.max_eval_samples, void_labels=args.void_labels or [])
    options.update(synthetic=True, synthetic_num_labels=model.config.num_labels) if args.dataset == "synthetic" else \
        options.update(dataset_name=args.dataset)
    dataset = load_split(DataArguments(**options), args.eval_split, "evaluation", id2label=model.config.id2label,
                         image_processor=processor, split_flag="--eval_split")
    dataset.num_labels = model.config.num_labels
    example = calibration[0]
    graph = convert_openvino(deployed_copy(model), example, dynamic_spatial=True)
    node_modules = openvino_node_modules(graph)
    compile_ = lambda g: core.compile_model(g, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})  # noqa: E731
    report: dict = {"model": args.model, "calibration_images": len(calibration), "eval_images": len(dataset)}

    start = time.time()
    report["fp32_miou"] = miou(compile_(graph), dataset)
    print(f"fp32 mIoU {100 * report['fp32_miou']:.2f} ({len(dataset)} images)", flush=True)
    naive = QUANTIZATION_SCHEMES["naive"]
    int8_graph, _ = quantize(graph, "openvino", calibration, naive)
    report["naive_int8_miou"] = miou(compile_(int8_graph), dataset)
    print(f"all-int8 (recipe 'naive') mIoU {100 * report['naive_int8_miou']:.2f}", flush=True)

    errors = per_layer_error(ov, core, graph, int8_graph, calibration[:8], node_modules)
    report["per_layer_error"] = {k: float(np.mean(v)) for k, v in errors.items()}
    print(
        "\nper-layer relative L2 error of convolution outputs (after the bias), all-int8 vs fp32 (mean over 8 images):"
    )
    for name, value in report["per_layer_error"].items():
        print(f"  {value:8.4f}  {name}")

    if not args.skip_blocks:
        report["blocks"] = {}
        print(f"\n{'block':45s} {'only this int8':>15s} {'this kept fp32':>15s}  nodes")
        for label, pattern in BLOCKS.items():
            matched = [n for n, p in node_modules.items() if p and re.fullmatch(pattern, p)]
            only, _ = quantize(graph, "openvino", calibration, naive, keep_fp32=[rf"(?!(?:{pattern})$).*"])
            kept, _ = quantize(graph, "openvino", calibration, naive, keep_fp32=[pattern])
            entry = {"only_this_int8": miou(compile_(only), dataset), "this_kept_fp32": miou(compile_(kept), dataset),
                     "nodes": len(matched)}
            report["blocks"][label] = entry
            print(f"{label:45s} {100 * entry['only_this_int8']:15.2f} {100 * entry['this_kept_fp32']:15.2f}  "
                  f"{len(matched)}", flush=True)

    report["recipes"] = {}
    print()
    for name, recipe in QUANTIZATION_SCHEMES.items():
        for fast_bias_correction in (True, False):
            variant = QuantizationScheme(name, recipe.keep_fp32, recipe.preset, fast_bias_correction)
            quantized, record = quantize(graph, "openvino", calibration, variant)
            value = miou(compile_(quantized), dataset)
            key = f"{name} (fast_bias_correction={fast_bias_correction})"
            report["recipes"][key] = {"miou": value, "nodes_kept_fp32": record["nodes_kept_fp32"]}
            print(f"recipe {key}: mIoU {100 * value:.2f}, {record['nodes_kept_fp32']} nodes kept fp32", flush=True)
    report["seconds"] = time.time() - start
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
