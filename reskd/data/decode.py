"""Decoding one encoded image (JPEG, PNG, GIF, WebP with torchvision; BMP with Pillow) into a uint8 RGB square of
the stored size."""
from __future__ import annotations

import io

import numpy as np
import torch
import torchvision.transforms.v2.functional as tvF
from torchvision.io import ImageReadMode, decode_image

def _fit(image: torch.Tensor, size: int) -> torch.Tensor:
    """Resize the short side to ``size`` and centre-crop to a square (a no-op when already ``size`` x ``size``)."""
    if image.shape[-2:] == (size, size):
        return image
    return tvF.center_crop(tvF.resize(image, [size], antialias=True), [size, size])


def _decode_with_pil(data: bytes) -> torch.Tensor:
    """A BMP (which torchvision.io does not decode) -> uint8 3 x H x W RGB, with Pillow (torchvision's dependency)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1).contiguous()


def _decode(data: bytes, size: int, where: str) -> torch.Tensor:
    """One encoded image -> uint8 3 x size x size (grayscale and RGBA become RGB)."""
    try:
        if data[:2] == b"BM":
            image = _decode_with_pil(data)
        else:
            image = decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
    except (RuntimeError, ValueError, OSError) as err:
        reason = (str(err).splitlines() or [type(err).__name__])[0]
        raise ValueError(f"cannot decode the image {where} ({reason}): the file is corrupt or not an image; replace "
                         f"or remove it.") from None
    if image.dtype != torch.uint8:  # 16-bit PNG
        image = tvF.to_dtype(image, torch.uint8, scale=True)
    return _fit(image, size)
