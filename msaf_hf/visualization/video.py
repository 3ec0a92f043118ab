"""Streaming video in and out with PyAV (``pip install msaf_hf[video]``): frames are decoded and encoded one at a
time, never held in memory together."""

from __future__ import annotations

import os
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

from PIL import Image

__all__ = ["VideoError", "VideoReader", "VideoWriter", "require_av"]


class VideoError(ValueError):
    """A video that cannot be decoded (no video stream, or a codec this FFmpeg build has no decoder for)."""


def require_av() -> Any:
    try:
        import av
    except ImportError:
        raise ImportError(
            "Reading and writing videos needs PyAV: pip install 'msaf_hf[video]' (or pip install av)."
        ) from None
    return av


class VideoReader:
    """Open a video and check that its first video stream can be decoded; iterate to get RGB ``PIL`` frames.

    Raises `VideoError` with the file, the codec and what to do when it cannot be decoded, and ``OSError`` when
    the file is not a media file FFmpeg recognises at all.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        av = require_av()
        self.path = Path(path)
        try:
            self._container = av.open(str(self.path), mode="r")
        except av.error.FFmpegError as error:
            raise OSError(f"{self.path}: not a readable video ({error}).") from error
        try:
            streams = self._container.streams.video
            if not streams:
                raise VideoError(f"{self.path}: the file has no video stream (only audio or data); nothing to segment.")
            self._stream = streams[0]
            codec = self._stream.codec_context
            name = getattr(codec, "name", None) if codec is not None else None
            if codec is None or not name or name == "none":
                tag = getattr(codec, "codec_tag", None) if codec is not None else None
                raise VideoError(
                    f"{self.path}: its video codec{f' (tag {tag!r})' if tag else ''} cannot be decoded by this FFmpeg "
                    f"build (PyAV {av.__version__}). Re-encode it to a common codec first, e.g. "
                    f"`ffmpeg -i {self.path.name} -c:v libx264 -pix_fmt yuv420p out.mp4`."
                )
            self._stream.thread_type = "AUTO"
            self.codec_name = name
        except BaseException:
            self._container.close()
            raise
        rate = self._stream.average_rate or self._stream.guessed_rate or self._stream.base_rate
        self.fps: Fraction = Fraction(rate) if rate else Fraction(25)
        self.num_frames: int = int(self._stream.frames or 0)  # 0 when the container does not say
        self.width: int = int(self._stream.codec_context.width)
        self.height: int = int(self._stream.codec_context.height)

    def __iter__(self) -> Iterator[Image.Image]:
        av = require_av()
        try:
            for frame in self._container.decode(self._stream):
                yield frame.to_image()
        except av.error.FFmpegError as error:
            raise VideoError(
                f"{self.path}: decoding failed after some frames ({error}); the file may be damaged."
            ) from error

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class VideoWriter:
    """Encode RGB ``PIL`` frames to a video file (H.264 where this FFmpeg build has an encoder, else MPEG-4 Part 2),
    written aside and renamed into place on `close`."""

    def __init__(self, path: str | os.PathLike[str], fps: Fraction | float, width: int, height: int) -> None:
        av = require_av()
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._staging = self.path.with_name(f".{self.path.stem}.{os.getpid()}.tmp{self.path.suffix}")
        self._container = av.open(str(self._staging), mode="w")
        rate = Fraction(fps).limit_denominator(1001000)
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        self._stream = self._container.add_stream(codec, rate=rate)
        # yuv420p (what players expect) needs even sides
        self._stream.width, self._stream.height = width - width % 2, height - height % 2
        self._stream.pix_fmt = "yuv420p"
        if codec == "mpeg4":
            self._stream.bit_rate = 4_000_000
        self.frames = 0

    def write(self, image: Image.Image) -> None:
        av = require_av()
        frame = av.VideoFrame.from_image(image.convert("RGB"))
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> Path:
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()
        os.replace(self._staging, self.path)
        return self.path

    def abort(self) -> None:
        try:
            self._container.close()
        finally:
            if self._staging.exists():
                self._staging.unlink()
