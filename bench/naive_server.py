"""The naive baseline the seed first planned: an HTTP service that answers one request at a time.

``http.server.HTTPServer`` (not the threading variant) runs decode, detect, align, embed and
match for each POSTed JPEG before it reads the next request: no batching, no overlap.  The model
behind it is anything with a ``verify`` method, so the request handling is tested with a fake.

Run as ``python -m bench.naive_server --port N`` (what the bench does, so that the server has
its own process and cores, like a deployed service would).
"""

from __future__ import annotations

import json
import logging
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, Protocol

import click
import numpy as np

log = logging.getLogger(__name__)

CLAIM_HEADER = "X-Claimed-Student"
PATH = "/verify"


class VerifyModel(Protocol):
    """What the naive service runs for each request."""

    def verify(self, jpeg: bytes, claimed_student_id: str | None) -> dict[str, Any]:
        """The outcome for one frame (JSON-serialisable)."""


class RealModel:
    """The production parts in one process: decode, MTCNN, alignment, embedder, gallery match."""

    def __init__(self, gallery_size: int = 1000, seed: int = 0) -> None:
        from facegate.paths import models_dir
        from inference_worker.embedder import Embedder
        from inference_worker.gallery import GalleryIndex
        from stream_processors.face_analysis import AlignmentTarget, FaceAnalyzer, detector_for
        from stream_processors.settings import StreamProcessorSettings

        settings = StreamProcessorSettings()
        self.embedder = Embedder(models_dir() / "mobilefacenet").load()
        card = self.embedder.card
        detector = detector_for(settings)
        target = AlignmentTarget(card.template_name, card.template, card.input_size)
        self.template = card.template_name
        self.analyzer = FaceAnalyzer(detector, [target], policy=settings.face_policy)
        self.max_pixels = settings.max_pixels
        rng = np.random.default_rng(seed)
        self.index = GalleryIndex(card.embedding_dim)
        self.index.replace_all(
            {
                f"s{i:06d}": rng.standard_normal((1, card.embedding_dim)).astype(np.float32)
                for i in range(gallery_size)
            }
        )

    def verify(self, jpeg: bytes, claimed_student_id: str | None) -> dict[str, Any]:
        """Decode, analyse, embed and match one frame."""
        from stream_processors.image_decoding import decode_image

        image = decode_image(jpeg, self.max_pixels)
        analysis = self.analyzer.analyze(image)
        if analysis.face is None:
            return {"outcome": analysis.outcome}
        probe = self.embedder.embed([analysis.crops[self.template]])
        score = self.index.verify(probe[0], claimed_student_id or "")
        top = self.index.search(probe, k=5)[0]
        return {
            "outcome": analysis.outcome,
            "score": score,
            "top": [[c.student_id, round(c.score, 4)] for c in top],
        }


def make_handler(model: VerifyModel) -> type[BaseHTTPRequestHandler]:
    """A request handler class bound to ``model``."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            if self.path != PATH:
                self._reply(404, {"error": "not found"})
                return
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            try:
                result = model.verify(body, self.headers.get(CLAIM_HEADER))
            except ValueError as exc:  # ImageError is a ValueError: the client's fault
                self._reply(422, {"error": str(exc)})
                return
            self._reply(200, result)

        def _reply(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug(format, *args)

    return Handler


class _Server(HTTPServer):
    # The default backlog of 5 would refuse some of the waiting clients' connections.
    request_queue_size = 64


def make_server(model: VerifyModel, port: int, host: str = "127.0.0.1") -> HTTPServer:
    """A single-threaded server (``port`` 0: any free port)."""
    return _Server((host, port), make_handler(model))


@click.command()
@click.option("--port", type=int, required=True)
@click.option("--gallery-size", type=int, default=1000, show_default=True)
def main(port: int, gallery_size: int) -> None:
    """Serve the real models, one request at a time."""
    import cv2

    cv2.setNumThreads(1)
    server = make_server(RealModel(gallery_size), port)
    print(f"naive server listening on {port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
