# Copyright 2025 The msaf_hf authors.
# Licensed under the Apache License, Version 2.0.
"""Image processor for DSNet semantic segmentation models.

This module is deliberately self-contained: it imports only ``numpy``, ``PIL``, ``torch`` and
``transformers`` so that it can be shipped next to a checkpoint on the Hugging Face Hub and loaded as
remote code (``trust_remote_code=True``) without the ``msaf_hf`` package being installed.

It is built on transformers' PIL backend (:class:`~transformers.image_processing_backends.PilBackend`)
rather than the torchvision backend, so that it works in environments where torchvision is absent.
"""

from collections.abc import Sequence
from typing import Any

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from transformers.image_processing_backends import PilBackend
from transformers.image_processing_outputs import SemanticSegmentationPostProcessorOutput
from transformers.image_processing_utils import BatchFeature
from transformers.image_utils import (
    IMAGENET_DEFAULT_MEAN,
    IMAGENET_DEFAULT_STD,
    ChannelDimension,
    ImageInput,
    PILImageResampling,
    SizeDict,
    is_scaled_image,
)
from transformers.processing_utils import ImagesKwargs, Unpack
from transformers.utils import TensorType, logging

__all__ = [
    "DSNetImageProcessor",
    "DSNetImageProcessorKwargs",
    "label_map_from_scores",
    "resize_label_map",
    "resize_scores",
]

# Channel counts that `PilBackend` knows how to turn into RGB (grayscale, RGB, RGBA).
_SUPPORTED_CHANNELS = (1, 3, 4)


class DSNetImageProcessorKwargs(ImagesKwargs, total=False):
    r"""
    do_reduce_labels (`bool`, *optional*, defaults to `self.do_reduce_labels`):
        Whether to shift every label of the segmentation maps down by one and map label 0 to `ignore_index`.
        Use it for datasets such as ADE20K where 0 means "background / unlabelled" and is not a class.
    ignore_index (`int`, *optional*, defaults to `self.ignore_index`):
        The label value meaning "not annotated": it is never altered by `do_reduce_labels`, and it is the value
        label 0 becomes when `do_reduce_labels` is on. Losses and metrics skip pixels with this value.
    """

    do_reduce_labels: bool
    ignore_index: int


class DSNetImageProcessor(PilBackend):
    r"""
    Prepares images (and optionally segmentation maps) for DSNet and turns its logits back into class maps.

    DSNet is evaluated on whole images at their native resolution and the model accepts any input size, so
    resizing is **off** by default; the only default transforms are rescaling to `[0, 1]` and ImageNet
    mean/std normalisation, exactly as the published training and evaluation code does.

    Args:
        do_resize (`bool`, *optional*, defaults to `False`):
            Whether to resize images (bilinear) and segmentation maps (nearest) to `size`.
        size (`dict[str, int]`, *optional*, defaults to `{"height": 1024, "width": 2048}`):
            Output size when `do_resize=True` (the default is the Cityscapes evaluation resolution).
        resample (`PILImageResampling`, *optional*, defaults to `PILImageResampling.BILINEAR`):
            Filter used to resize images. Segmentation maps always use `NEAREST` so that no new label values
            are invented.
        do_rescale (`bool`, *optional*, defaults to `True`):
            Whether to multiply pixel values by `rescale_factor`.
        rescale_factor (`float`, *optional*, defaults to `1/255`):
            Rescaling factor (maps uint8 pixels to `[0, 1]`).
        do_normalize (`bool`, *optional*, defaults to `True`):
            Whether to normalise with `image_mean` / `image_std`.
        image_mean (`tuple[float]`, *optional*, defaults to ImageNet mean `(0.485, 0.456, 0.406)`):
        image_std (`tuple[float]`, *optional*, defaults to ImageNet std `(0.229, 0.224, 0.225)`):
        do_convert_rgb (`bool`, *optional*, defaults to `True`):
            Convert grayscale and RGBA inputs to RGB (RGBA is composited onto white).
        do_reduce_labels (`bool`, *optional*, defaults to `False`):
            ADE20K-style label reduction: 0 becomes `ignore_index`, every other label is decreased by 1.
        ignore_index (`int`, *optional*, defaults to 255):
            Label value of unannotated pixels.
    """

    valid_kwargs = DSNetImageProcessorKwargs
    model_input_names = ["pixel_values"]

    resample = PILImageResampling.BILINEAR
    image_mean = IMAGENET_DEFAULT_MEAN
    image_std = IMAGENET_DEFAULT_STD
    size = {"height": 1024, "width": 2048}
    default_to_square = True
    crop_size = None
    do_resize = False
    do_center_crop = None
    do_rescale = True
    rescale_factor = 1 / 255
    do_normalize = True
    do_convert_rgb = True
    do_reduce_labels = False
    ignore_index = 255

    def __init__(self, **kwargs: Unpack[DSNetImageProcessorKwargs]) -> None:
        super().__init__(**kwargs)
        if isinstance(self.ignore_index, bool) or not isinstance(self.ignore_index, int):
            raise TypeError(f"DSNetImageProcessor: `ignore_index` must be an int, got {self.ignore_index!r}.")

    # ------------------------------------------------------------------ preprocessing

    def preprocess(
        self,
        images: ImageInput,
        segmentation_maps: ImageInput | None = None,
        return_tensors: str | TensorType | None = "pt",
        **kwargs: Unpack[DSNetImageProcessorKwargs],
    ) -> BatchFeature:
        r"""
        Preprocess one image or a batch of images, and optionally their segmentation maps.

        Args:
            images (`PIL.Image.Image`, `np.ndarray`, `torch.Tensor` or a list of them):
                A single image or a batch. Arrays and tensors may be `(H, W)`, `(H, W, C)`, `(C, H, W)` or a
                stacked batch `(N, H, W, C)` / `(N, C, H, W)` with C in {1, 3, 4}; the channel axis is inferred
                (pass `input_data_format` when H or W is itself 1, 3 or 4). Integer inputs are expected in
                `[0, 255]`, except 16-bit ones (PIL modes `I;16`/`I`, numpy/torch `uint16`), which are scaled by
                their bit depth (0..65535 onto the same range); float inputs already in `[0, 1]` need
                `do_rescale=False` (a warning says so).
            segmentation_maps (same kinds as `images`, *optional*):
                One `(H, W)` map of integer class ids per image, the same size as its image. A stacked
                `(N, H, W)` array/tensor is read as a batch.
            return_tensors (`str` or `TensorType`, *optional*, defaults to `"pt"`):
                `"pt"` for torch tensors, `"np"` for numpy arrays, `None` for lists of numpy arrays (needed when
                images of different sizes are processed without resizing).

        Returns:
            [`BatchFeature`] with `pixel_values` (float32, `(N, C, H, W)`; C is 3 unless `do_convert_rgb=False`
            keeps other channel counts) and, when segmentation maps are
            given, `labels` (int64, `(N, H, W)`).
        """
        images = _as_image_list(images)
        do_rescale = kwargs.get("do_rescale")
        _warn_if_already_rescaled(images, self.do_rescale if do_rescale is None else do_rescale)
        images = [_scale_high_bit_depth(image) for image in images]
        if segmentation_maps is not None:
            segmentation_maps = _as_segmentation_map_list(segmentation_maps)
            if len(segmentation_maps) != len(images):
                raise ValueError(
                    f"DSNetImageProcessor: got {len(images)} image(s) but {len(segmentation_maps)} segmentation "
                    "map(s); pass exactly one segmentation map per image."
                )
        return super().preprocess(images, segmentation_maps, return_tensors=return_tensors, **kwargs)

    def _preprocess_image_like_inputs(
        self,
        images: list[Any],
        segmentation_maps: list[np.ndarray] | None,
        do_convert_rgb: bool,
        input_data_format: str | ChannelDimension | None,
        return_tensors: str | TensorType | None,
        **kwargs: Any,
    ) -> BatchFeature:
        """Run images and segmentation maps through their (different) pipelines and batch the result."""
        prepared = self._prepare_image_like_inputs(
            images=images, do_convert_rgb=do_convert_rgb, input_data_format=input_data_format
        )
        # Any channel count passes through with do_convert_rgb=False (a `DSNetConfig(num_channels=4)` model takes
        # RGB + infrared, say); normalisation needs one mean/std per channel then.
        for index, image in enumerate(prepared):
            for name in ("image_mean", "image_std"):
                value = kwargs.get(name)
                if kwargs.get("do_normalize") and isinstance(value, Sequence) and len(value) != image.shape[0]:
                    raise ValueError(
                        f"DSNetImageProcessor: image {index} has {image.shape[0]} channels but {name} has "
                        f"{len(value)} values; pass one value per channel (and do_convert_rgb=False to keep "
                        "non-RGB channels)."
                    )
        image_sizes = [tuple(image.shape[-2:]) for image in prepared]
        data: dict[str, Any] = {"pixel_values": self._preprocess(prepared, **kwargs)}

        if segmentation_maps is not None:
            for index, (label_map, image_size) in enumerate(zip(segmentation_maps, image_sizes, strict=False)):
                # A map of a different size than its image cannot be aligned pixel-to-pixel: resizing both
                # to `size` would hide the mismatch and silently train on shifted labels.
                if tuple(label_map.shape) != image_size:
                    raise ValueError(
                        f"DSNetImageProcessor: segmentation map {index} has size {tuple(label_map.shape)} but its "
                        f"image has size {image_size} (height, width); they must match pixel for pixel."
                    )
            data["labels"] = [
                self._preprocess_segmentation_map(
                    label_map,
                    do_reduce_labels=kwargs["do_reduce_labels"],
                    ignore_index=kwargs["ignore_index"],
                    do_resize=kwargs["do_resize"],
                    size=kwargs["size"],
                )
                for label_map in segmentation_maps
            ]

        if return_tensors is not None:
            _check_same_size(data["pixel_values"], "pixel_values")
        if return_tensors is not None and TensorType(return_tensors) == TensorType.PYTORCH:
            # Batch without the extra copy BatchFeature's numpy stacking makes (a view for a single image).
            pixel_values = [torch.from_numpy(image) for image in data["pixel_values"]]
            data["pixel_values"] = pixel_values[0][None] if len(pixel_values) == 1 else torch.stack(pixel_values)
        return BatchFeature(data=data, tensor_type=return_tensors)

    def _preprocess(
        self,
        images: list[np.ndarray],
        do_resize: bool,
        size: SizeDict,
        resample: PILImageResampling | None,
        do_rescale: bool,
        rescale_factor: float,
        do_normalize: bool,
        image_mean: float | Sequence[float],
        image_std: float | Sequence[float],
        **kwargs: Any,
    ) -> list[np.ndarray]:
        """Resize, rescale and normalise channels-first images; always returns float32 arrays."""
        processed = []
        for image in images:
            if do_resize:
                image = self.resize(image, size=size, resample=resample)
            # One float32 copy (torch copies a strided channels-first view fast), then rescale and normalise in
            # place: ((x * factor) - mean) / std per channel. The backend's rescale/normalize allocate a new float64
            # array per step: twice as slow on the evaluation path (whole 1024x2048 images), same values to float32
            # rounding.
            pixels = torch.from_numpy(np.require(image, requirements=["W"])).to(torch.float32, copy=True)
            if do_rescale:
                pixels.mul_(rescale_factor)
            if do_normalize:
                channels = pixels.shape[0]
                pixels.sub_(torch.as_tensor(image_mean, dtype=torch.float32).reshape(-1, 1, 1).expand(channels, 1, 1))
                pixels.div_(torch.as_tensor(image_std, dtype=torch.float32).reshape(-1, 1, 1).expand(channels, 1, 1))
            image = pixels.numpy()
            processed.append(image)
        return processed

    def reduce_label(self, label_map: np.ndarray, ignore_index: int | None = None) -> np.ndarray:
        """ADE20K-style label reduction: 0 -> `ignore_index`, `ignore_index` unchanged, others minus one."""
        ignore_index = self.ignore_index if ignore_index is None else ignore_index
        label_map = np.asarray(label_map, dtype=np.int64)
        reduced = label_map - 1
        # Work in int64 so that 0 - 1 cannot wrap around as it would in uint8.
        reduced[(label_map == 0) | (label_map == ignore_index)] = ignore_index
        return reduced

    def _preprocess_segmentation_map(
        self,
        label_map: np.ndarray,
        do_reduce_labels: bool,
        ignore_index: int,
        do_resize: bool,
        size: SizeDict,
    ) -> np.ndarray:
        """Reduce labels if asked, resize with NEAREST, and return an int64 `(H, W)` map."""
        label_map = np.asarray(label_map, dtype=np.int64)
        if do_reduce_labels:
            label_map = self.reduce_label(label_map, ignore_index)
        if do_resize:
            label_map = resize_label_map(label_map, self._target_size(label_map.shape, size))
        return label_map

    def _target_size(self, height_width: tuple[int, int], size: SizeDict) -> tuple[int, int]:
        """The (height, width) that `self.resize` produces for an image of `height_width` and this `size`."""
        # Resizing a dummy single-channel image is the one way to share every size rule of the backend
        # (height/width, shortest_edge, max_height...) with the images, so labels always land on the same grid.
        dummy = np.zeros((1, *height_width), dtype=np.uint8)
        return tuple(self.resize(dummy, size=size, resample=PILImageResampling.NEAREST).shape[-2:])

    # ------------------------------------------------------------------ post-processing

    def post_process_semantic_segmentation(
        self,
        outputs: Any,
        target_sizes: Sequence[Sequence[int]] | torch.Tensor | None = None,
        return_segmentation_scores: bool = False,
    ) -> list[torch.Tensor] | list[SemanticSegmentationPostProcessorOutput]:
        """
        Turn model logits into per-image class-id maps.

        Args:
            outputs:
                The model output (anything with a `logits` attribute or key of shape `(N, C, h, w)`), or the
                logits tensor itself.
            target_sizes (list of `(height, width)` or a `(N, 2)` tensor, *optional*):
                Size of each returned map, usually the original image sizes. The logits are upsampled bilinearly
                (`align_corners=False`, as DSNet does) before the argmax. Without it, the argmax is taken at the
                logits' own resolution.
            return_segmentation_scores (`bool`, *optional*, defaults to `False`):
                Return [`SemanticSegmentationPostProcessorOutput`] items carrying the (resized) logits as
                `segmentation_scores` next to `segmentation`.

        Returns:
            A list of `N` int64 tensors of shape `(height, width)` holding class ids; for one-channel logits (a
            binary segmenter, `num_labels=1`) the class is 1 where the logit is positive, else 0 (or, with
            `return_segmentation_scores=True`, a list of [`SemanticSegmentationPostProcessorOutput`]).
        """
        logits = _get_logits(outputs)
        if target_sizes is None:
            segmentation = label_map_from_scores(logits, dim=1)
            results = [
                SemanticSegmentationPostProcessorOutput(
                    data={"segmentation": segmentation[i], "segmentation_scores": logits[i]}
                )
                for i in range(logits.shape[0])
            ]
        else:
            sizes = _normalize_target_sizes(target_sizes, batch_size=logits.shape[0])
            results = []
            for i, size in enumerate(sizes):
                # One image at a time: every image of the batch may have its own original size.
                scores = resize_scores(logits[i : i + 1], size)[0]
                results.append(
                    SemanticSegmentationPostProcessorOutput(
                        data={"segmentation": label_map_from_scores(scores, dim=0), "segmentation_scores": scores}
                    )
                )
        if return_segmentation_scores:
            return results
        return [result["segmentation"] for result in results]


# ---------------------------------------------------------------------- input helpers


# PIL modes of 16-bit grayscale images (PNG/TIFF; `I` in older Pillow), whose RGB conversion would clip at 255.
_HIGH_BIT_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_UINT16_TO_UINT8_SCALE = 255.0 / 65535.0

logger = logging.get_logger(__name__)


def _scale_high_bit_depth(image: Any) -> Any:
    """16-bit images as float32 arrays on the 8-bit scale (0..65535 -> 0..255), so that `rescale_factor` (1/255)
    maps them onto [0, 1] like 8-bit images. Other images are returned unchanged."""
    if isinstance(image, PIL.Image.Image) and image.mode in _HIGH_BIT_DEPTH_MODES:
        array = np.asarray(image).astype(np.float64)
        if array.size and (array.min() < 0 or array.max() > 65535):
            raise ValueError(
                f"DSNetImageProcessor: a PIL image of mode {image.mode} has values in [{array.min():g}, "
                f"{array.max():g}], outside the 16-bit range 0..65535; convert it to 8- or 16-bit first."
            )
        return (array * _UINT16_TO_UINT8_SCALE).astype(np.float32)[..., None]
    if isinstance(image, np.ndarray) and image.dtype == np.uint16:
        return image.astype(np.float32) * np.float32(_UINT16_TO_UINT8_SCALE)
    return image


def _warn_if_already_rescaled(images: list[Any], do_rescale: bool) -> None:
    """transformers' warning for float inputs in [0, 1] that would be rescaled a second time."""
    if not do_rescale:
        return
    for image in images:
        if isinstance(image, np.ndarray) and np.issubdtype(image.dtype, np.floating) and is_scaled_image(image):
            logger.warning_once(
                "It looks like you are trying to rescale already rescaled images. If the input images have pixel "
                "values between 0 and 1, set `do_rescale=False` to avoid rescaling them again."
            )
            return


def _to_numpy(value: Any) -> Any:
    """Detach/copy torch tensors to CPU numpy (the PIL backend works on numpy); leave others untouched."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return value


def _as_image_list(images: ImageInput) -> list[Any]:
    """Flatten `images` into a list of single images, turning 2-D grayscale arrays into `(H, W, 1)`."""
    if isinstance(images, (list, tuple)):
        if len(images) == 0:
            raise ValueError("DSNetImageProcessor: `images` is an empty list; pass at least one image.")
        flat = []
        for index, image in enumerate(images):
            flat.extend(_split_images(image, f"images[{index}]", allow_batch=False))
        return flat
    return _split_images(images, "images", allow_batch=True)


def _split_images(image: Any, name: str, allow_batch: bool) -> list[Any]:
    if isinstance(image, (PIL.Image.Image, str)):
        # Strings are paths/URLs: the base class' `fetch_images` loads them, as for every transformers processor.
        return [image]
    image = _to_numpy(image)
    if not isinstance(image, np.ndarray):
        raise TypeError(
            f"DSNetImageProcessor: {name} has unsupported type {type(image).__name__}; pass PIL images, numpy "
            "arrays or torch tensors (or a list of them)."
        )
    if image.ndim == 2:
        # Grayscale (H, W): give it an explicit trailing channel so that it follows the RGB conversion path.
        return [image[..., None]]
    if image.ndim == 3:
        _check_channels(image.shape, name)
        return [image]
    if image.ndim == 4 and allow_batch:
        for index in range(image.shape[0]):
            _check_channels(image.shape[1:], f"{name}[{index}]")
        return list(image)
    expected = "(H, W), (H, W, C), (C, H, W) or a batch (N, H, W, C)/(N, C, H, W)" if allow_batch else (
        "(H, W), (H, W, C) or (C, H, W)"
    )
    raise ValueError(f"DSNetImageProcessor: {name} has shape {tuple(image.shape)}; expected {expected}.")


def _check_channels(shape: Sequence[int], name: str) -> None:
    if shape[0] not in _SUPPORTED_CHANNELS and shape[-1] not in _SUPPORTED_CHANNELS:
        raise ValueError(
            f"DSNetImageProcessor: {name} has shape {tuple(shape)}, in which neither the first nor the last axis "
            f"is a channel axis of size {_SUPPORTED_CHANNELS} (grayscale, RGB, RGBA). Convert it to RGB first."
        )


def _as_segmentation_map_list(segmentation_maps: ImageInput) -> list[np.ndarray]:
    """Flatten segmentation maps into a list of integer `(H, W)` numpy arrays."""
    if isinstance(segmentation_maps, (list, tuple)):
        if len(segmentation_maps) == 0:
            raise ValueError("DSNetImageProcessor: `segmentation_maps` is an empty list.")
        maps = [_single_map(m, f"segmentation_maps[{i}]") for i, m in enumerate(segmentation_maps)]
    else:
        value = segmentation_maps if isinstance(segmentation_maps, PIL.Image.Image) else _to_numpy(segmentation_maps)
        if isinstance(value, np.ndarray) and value.ndim == 3:
            # A stacked (N, H, W) batch, like the stacked (N, H, W, C) image batches.
            maps = [_single_map(m, f"segmentation_maps[{i}]") for i, m in enumerate(value)]
        else:
            maps = [_single_map(value, "segmentation_maps")]
    return maps


def _single_map(label_map: Any, name: str) -> np.ndarray:
    if isinstance(label_map, PIL.Image.Image):
        label_map = np.array(label_map)
    label_map = _to_numpy(label_map)
    if not isinstance(label_map, np.ndarray):
        raise TypeError(
            f"DSNetImageProcessor: {name} has unsupported type {type(label_map).__name__}; pass a PIL image, "
            "numpy array or torch tensor of class ids."
        )
    if label_map.ndim == 3 and 1 in (label_map.shape[0], label_map.shape[-1]):
        # Tolerate an explicit singleton channel, (1, H, W) or (H, W, 1).
        label_map = label_map.reshape(label_map.shape[1:] if label_map.shape[0] == 1 else label_map.shape[:-1])
    if label_map.ndim != 2:
        raise ValueError(
            f"DSNetImageProcessor: {name} has shape {tuple(label_map.shape)}; a segmentation map must be "
            "(H, W) class ids. Colour-coded (RGB) label images must be converted to class ids first."
        )
    if label_map.dtype == np.bool_ or not np.issubdtype(label_map.dtype, np.integer):
        if not np.issubdtype(label_map.dtype, np.floating) or not np.array_equal(label_map, np.round(label_map)):
            raise ValueError(
                f"DSNetImageProcessor: {name} has dtype {label_map.dtype} with non-integer values; segmentation "
                "maps must hold integer class ids."
            )
    return label_map.astype(np.int64)


def resize_label_map(label_map: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a class-id map to `size` (height, width), on the grid PIL gives the image.

    The one label-map resize of msaf_hf (the image processor and the training augmentation): through PIL's 32-bit
    integer mode, exact for any label that fits in int32; returns int64."""
    label_map = np.asarray(label_map)
    info = np.iinfo(np.int32)
    if label_map.size and (label_map.min() < info.min or label_map.max() > info.max):
        raise ValueError("DSNetImageProcessor: segmentation map values must fit in int32 to be resized.")
    height, width = size
    resized = PIL.Image.fromarray(label_map.astype(np.int32)).resize((width, height), PIL.Image.Resampling.NEAREST)
    return np.asarray(resized, dtype=np.int64)


def _check_same_size(arrays: list[np.ndarray], name: str) -> None:
    sizes = {tuple(array.shape) for array in arrays}
    if len(sizes) > 1:
        raise ValueError(
            f"DSNetImageProcessor: cannot stack {name} of different sizes {sorted(sizes)} into one tensor. "
            "Pass do_resize=True with a `size`, process the images one at a time, or use return_tensors=None "
            "to get a list of arrays."
        )


# ---------------------------------------------------------------------- post-processing helpers


def resize_scores(logits: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Class scores `(N, C, h, w)` resized to `size` (height, width) as DSNet upsamples its logits: bilinear,
    `align_corners=False`."""
    size = tuple(int(v) for v in size)
    if tuple(logits.shape[-2:]) == size:
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


def label_map_from_scores(scores: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Class ids from class scores (logits or probabilities): the argmax over the class axis `dim`; one channel is
    a binary segmenter's foreground logit (class 1 where > 0). The one logits -> label map rule of msaf_hf (the
    image processor's post-processing, evaluation and the pictures use it)."""
    if scores.shape[dim] == 1:
        return (scores.squeeze(dim) > 0).long()
    return scores.argmax(dim=dim)


def _get_logits(outputs: Any) -> torch.Tensor:
    if isinstance(outputs, torch.Tensor):
        logits = outputs
    elif getattr(outputs, "logits", None) is not None:
        logits = outputs.logits
    elif isinstance(outputs, dict) and outputs.get("logits") is not None:
        logits = outputs["logits"]
    else:
        raise ValueError(
            "DSNetImageProcessor.post_process_semantic_segmentation: `outputs` has no `logits`; pass the model "
            f"output or the logits tensor (got {type(outputs).__name__})."
        )
    if not isinstance(logits, torch.Tensor) or logits.ndim != 4:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(
            "DSNetImageProcessor.post_process_semantic_segmentation: logits must be a (batch, num_labels, height, "
            f"width) tensor, got {shape}."
        )
    return logits


def _normalize_target_sizes(
    target_sizes: Sequence[Sequence[int]] | torch.Tensor, batch_size: int
) -> list[tuple[int, int]]:
    if isinstance(target_sizes, torch.Tensor):
        target_sizes = target_sizes.tolist()
    if len(target_sizes) != batch_size:
        raise ValueError(
            f"DSNetImageProcessor.post_process_semantic_segmentation: got {len(target_sizes)} target size(s) for "
            f"a batch of {batch_size} logits; pass one (height, width) per image."
        )
    sizes = []
    for index, size in enumerate(target_sizes):
        size = tuple(int(v) for v in size) if isinstance(size, (list, tuple)) else None
        if size is None or len(size) != 2 or min(size) <= 0:
            raise ValueError(
                f"DSNetImageProcessor.post_process_semantic_segmentation: target_sizes[{index}] = "
                f"{target_sizes[index]!r} is not a (height, width) pair of positive integers."
            )
        sizes.append(size)
    return sizes
