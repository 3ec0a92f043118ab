"""``msaf-hf predict``: segment images, folders, globs and videos and write the predictions as pictures (the code
of :mod:`msaf_hf.visualization.predict`).

    msaf-hf predict outputs/dsnet-camvid/final photos/ 'more/*.jpg' drive.mp4 --output_dir preds
"""

from __future__ import annotations

from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Predict; returns the exit status (0: done, 1: nothing could be read, 2: bad arguments or input)."""
    from ..visualization.predict import main as predict

    return predict(argv)
