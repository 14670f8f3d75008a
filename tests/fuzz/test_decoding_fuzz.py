"""Property-based tests: no bytes on a topic crash the decoders; each gets a reason instead."""

from __future__ import annotations

import struct
import zlib

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.codec import SchemaError, decode, encode, encode_version
from schemas.messages import ALL_MESSAGES, Face, Frame
from stream_processors.image_decoding import ImageError, decode_image, image_dimensions

pytestmark = pytest.mark.fuzz

MAX_PIXELS = 4096 * 4096


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048))
def test_any_bytes_decode_or_raise_schema_error(raw: bytes) -> None:
    for message_type in ALL_MESSAGES:
        try:
            decode(raw, message_type)
        except SchemaError as error:
            assert error.reason


json_like = st.recursive(
    st.none()
    | st.booleans()
    # msgpack carries 64-bit integers: a producer cannot write bigger ones.
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(
    schema=st.sampled_from([m.SCHEMA for m in ALL_MESSAGES] + ["nope"]),
    version=st.integers(min_value=-2, max_value=5),
    data=st.dictionaries(st.text(max_size=20), json_like, max_size=8),
)
def test_well_formed_envelopes_with_wrong_content_are_refused_cleanly(
    schema: str, version: int, data: dict[str, object]
) -> None:
    raw = encode_version(schema, version, data)
    for message_type in (Frame, Face):
        try:
            decoded = decode(raw, message_type)
        except SchemaError as error:
            assert error.reason in {
                "wrong_schema",
                "bad_version",
                "unsupported_version",
                "invalid",
                "bad_envelope",
            }
        else:
            assert encode(decoded)  # whatever decodes is a valid message that re-encodes


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=4096))
def test_any_bytes_as_an_image_decode_or_raise_image_error(data: bytes) -> None:
    try:
        image = decode_image(data, MAX_PIXELS)
    except ImageError as error:
        assert error.reason in {"undecodable_image", "truncated_image", "oversized_image"}
    else:
        assert image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8


def _png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    # A tiny compressed stream that would inflate to gigabytes: a decompression bomb.
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 1024))
        + chunk(b"IEND", b"")
    )


@settings(max_examples=50, deadline=None)
@given(
    st.integers(min_value=4097, max_value=2**31 - 1),
    st.integers(min_value=4097, max_value=2**31 - 1),
)
def test_decompression_bombs_are_refused_before_decoding(width: int, height: int) -> None:
    data = _png(width, height)
    assert image_dimensions(data) == (width, height)
    with pytest.raises(ImageError) as error:
        decode_image(data, MAX_PIXELS)
    assert error.value.reason == "oversized_image"


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=2, max_value=400))
def test_truncated_jpegs_are_refused(cut: int) -> None:
    import cv2

    image = np.random.default_rng(cut).integers(0, 255, size=(64, 64, 3), dtype=np.uint8)
    ok, jpeg = cv2.imencode(".jpg", image)
    assert ok
    data = jpeg.tobytes()[: -min(cut, len(jpeg) - 4)]
    with pytest.raises(ImageError) as error:
        decode_image(data, MAX_PIXELS)
    assert error.value.reason in {"truncated_image", "undecodable_image"}


def test_msgpack_bombs_are_bounded() -> None:
    # A declared 2**31-element array in a few bytes: refused as undecodable, not allocated.
    bomb = b"\xdd\x7f\xff\xff\xff"
    with pytest.raises(SchemaError):
        decode(bomb, Frame)
    assert msgpack  # the codec is msgpack; the bound is the message size limit (16 MiB)


@pytest.fixture(scope="module")
def frame_processor() -> object:
    from facegate.paths import models_dir
    from inference_worker.embedder import ModelCard
    from stream_processors.face_analysis import AlignmentTarget, FaceAnalyzer
    from stream_processors.frame_processor import FrameProcessor
    from stream_processors.vision.mtcnn import MtcnnDetector

    card = ModelCard.read(models_dir() / "mobilefacenet")
    target = AlignmentTarget(card.template_name, card.template, card.input_size)
    analyzer = FaceAnalyzer(MtcnnDetector(models_dir() / "mtcnn").load(), [target])
    return FrameProcessor(analyzer, MAX_PIXELS, "fuzz")


@settings(max_examples=60, deadline=None)
@given(
    image=st.binary(min_size=1, max_size=3000),
    prefix=st.sampled_from([b"", b"\xff\xd8", b"\x89PNG\r\n\x1a\n"]),
)
def test_the_stream_processor_answers_every_frame(
    frame_processor: object, image: bytes, prefix: bytes
) -> None:
    from stream_processors.frame_processor import FrameProcessor, RecordRef

    assert isinstance(frame_processor, FrameProcessor)
    frame = Frame(
        frame_id="fuzz",
        gate_id="g",
        exam_id="e",
        claimed_student_id="s",
        captured_at=1.0,
        published_at=1.0,
        image=prefix + image,
    )
    result = frame_processor.process(encode(frame), RecordRef("frames", 0, 0, None))
    # Exactly one answer, never an exception: a face message or a dead letter with a reason.
    assert (result.face is None) != (result.dead_letter is None)
    if result.dead_letter is not None:
        assert result.dead_letter.reason and result.dead_letter.payload == encode(frame)
