"""Decode frame images safely: check the declared size before any pixel is decoded.

A decompression bomb is a small file that declares a huge image; reading the dimensions from
the JPEG or PNG header first means such a file is refused without allocating its pixels.
"""

from __future__ import annotations

import struct

import cv2
import numpy as np
import numpy.typing as npt


class ImageError(ValueError):
    """An image that cannot be used; ``reason`` goes into the dead letter."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def image_dimensions(data: bytes) -> tuple[int, int]:
    """(width, height) declared by a JPEG or PNG header; ImageError when there is none."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        if len(data) < 24 or data[12:16] != b"IHDR":
            raise ImageError("undecodable_image", "PNG without an IHDR header")
        width, height = struct.unpack(">II", data[16:24])
        return int(width), int(height)
    if data[:2] == b"\xff\xd8":
        position = 2
        while position + 4 <= len(data):
            if data[position] != 0xFF:
                raise ImageError("undecodable_image", "JPEG marker expected")
            marker = data[position + 1]
            if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
                position += 2
                continue
            (length,) = struct.unpack(">H", data[position + 2 : position + 4])
            if marker in _JPEG_SOF:
                if position + 9 > len(data):
                    break
                height, width = struct.unpack(">HH", data[position + 5 : position + 9])
                return int(width), int(height)
            position += 2 + length
        raise ImageError("undecodable_image", "JPEG without a frame header")
    raise ImageError("undecodable_image", "neither JPEG nor PNG")


def _check_complete(data: bytes) -> None:
    # Decoders fill a truncated image with grey and only warn: refuse it before decoding.
    tail = data.rstrip(b"\x00")
    if data[:2] == b"\xff\xd8" and tail[-2:] != b"\xff\xd9":
        raise ImageError("truncated_image", "JPEG ends before its end-of-image marker")
    if data[:4] == b"\x89PNG" and b"IEND" not in tail[-12:]:
        raise ImageError("truncated_image", "PNG ends before its IEND chunk")


def decode_image(data: bytes, max_pixels: int) -> npt.NDArray[np.uint8]:
    """An RGB uint8 array from JPEG/PNG bytes, refusing images over ``max_pixels``."""
    width, height = image_dimensions(data)
    _check_complete(data)
    if width <= 0 or height <= 0:
        raise ImageError("undecodable_image", f"declared size {width}x{height}")
    if width * height > max_pixels:
        raise ImageError(
            "oversized_image", f"{width}x{height} = {width * height} pixels > {max_pixels}"
        )
    bgr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ImageError("undecodable_image", "the decoder could not read the pixels")
    if bgr.shape[1] != width or bgr.shape[0] != height:
        raise ImageError("undecodable_image", "decoded size differs from the header")
    return np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), dtype=np.uint8)
