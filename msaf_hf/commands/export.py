"""``msaf-hf export``: export DSNet to an inference engine folder (OpenVINO or ONNX Runtime, fp32 or int8; the
code of :mod:`msaf_hf.engines.exporting`).

    msaf-hf export outputs/camvid/final camvid-openvino --engine openvino --precision fp32
"""

from __future__ import annotations

from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Export, check the engine against PyTorch, and write the folder."""
    from ..engines.exporting import main as export

    export(argv)
    return 0
