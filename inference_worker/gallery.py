"""The gallery: enrolled students' face templates in Redis, mirrored in memory for matching.

Redis layout (one namespace per model version, so a model change re-embeds into a fresh one):
- ``facegate:gallery:{version}:students``: set of enrolled student ids;
- ``facegate:gallery:{version}:t:{student}``: the student's templates, float32 (k, D) bytes,
  sealed with AES-256-GCM under the gallery key ring (template_crypto.py; plaintext values
  written before encryption are still read);
- ``facegate:gallery:{version}:dim``: D (not biometric: stored as it is);
- ``facegate:student:{student}``: hash with ``name`` and ``photo`` (a small JPEG for the console,
  sealed with the gallery key: sealed_objects.py).

Workers load the whole gallery at start and then follow the ``enrollments`` topic, so
enrolments and removals reach them without a restart; 1:1 matching compares a probe with
every template of the claimed student, 1:N search compares it with one normalised mean
template per student (a single matrix product).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import redis

from facegate.errors import FacegateError
from facegate.redis_client import waiting_may_cure
from inference_worker.gallery_scan import Int8Scan
from inference_worker.template_crypto import TemplateCipher, default_cipher

Vector = npt.NDArray[np.float32]
log = logging.getLogger(__name__)


def _key(version: str, *parts: str) -> str:
    return ":".join(("facegate", "gallery", version, *parts))


def student_key(student_id: str) -> str:
    """The Redis hash of a student's details (name, and the enrolment portrait, sealed)."""
    return f"facegate:student:{student_id}"


def normalise(rows: Vector) -> Vector:
    """Rows scaled to unit length."""
    norms = np.linalg.norm(rows, axis=-1, keepdims=True)
    scaled: Vector = (rows / np.maximum(norms, 1e-12)).astype(np.float32)
    return scaled


def gallery_versions(client: redis.Redis[bytes]) -> list[str]:
    """Every model version with a students set in Redis."""
    prefix, suffix = _key(""), ":students"
    versions = {
        (k.decode() if isinstance(k, bytes) else str(k))[len(prefix) : -len(suffix)]
        for k in client.scan_iter(match=f"{prefix}*{suffix}", count=1000)
    }
    # Not a template key of a student whose id ends in ":students".
    return sorted(v for v in versions if ":t:" not in v)


def unlisted_template_keys(client: redis.Redis[bytes], listed: set[str]) -> Iterator[str]:
    """Template keys in Redis that no students set lists (left by an interrupted write)."""
    for raw in client.scan_iter(match=_key("*", "t", "*"), count=1000):
        key = raw.decode() if isinstance(raw, bytes) else str(raw)
        if key not in listed:
            yield key


class GalleryStore:
    """Templates in Redis for one model version, sealed at rest (see template_crypto.py).

    ``cipher`` defaults to the one of this process's settings (``FACEGATE_GALLERY_*``), looked
    up when a template is first read or written: listing students needs no key.
    """

    def __init__(
        self,
        client: redis.Redis[bytes],
        model_version: str,
        cipher: TemplateCipher | None = None,
    ) -> None:
        self.client = client
        self.version = model_version
        self._cipher = cipher

    @property
    def cipher(self) -> TemplateCipher:
        if self._cipher is None:
            self._cipher = default_cipher()
        return self._cipher

    def template_key(self, student_id: str) -> str:
        """The Redis key of a student's templates (also what their ciphertext is bound to)."""
        return _key(self.version, "t", student_id)

    def _decode(self, student_id: str, raw: bytes, dim: int) -> Vector:
        data = self.cipher.open(self.template_key(student_id), raw)
        return np.frombuffer(data, dtype=np.float32).reshape(-1, dim).copy()

    def put(self, student_id: str, templates: Vector) -> None:
        """Store (replace) a student's templates."""
        data = np.ascontiguousarray(normalise(templates), dtype=np.float32)
        key = self.template_key(student_id)
        sealed = self.cipher.seal(key, data.tobytes())
        pipe = self.client.pipeline(transaction=True)
        pipe.set(key, sealed)
        pipe.set(_key(self.version, "dim"), str(data.shape[1]))
        pipe.sadd(_key(self.version, "students"), student_id)
        pipe.execute()

    def get(self, student_id: str) -> Vector | None:
        """A student's templates, or None when not enrolled under this model version."""
        raw = self.client.get(self.template_key(student_id))
        if raw is None:
            return None
        dim = int(self.client.get(_key(self.version, "dim")) or 0)
        self.cipher.refresh()
        return self._decode(student_id, raw, dim)

    def remove(self, student_id: str) -> bool:
        """Delete a student's templates; return whether there were any."""
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(self.template_key(student_id))
        pipe.srem(_key(self.version, "students"), student_id)
        deleted, _ = pipe.execute()
        return bool(deleted)

    def students(self) -> list[str]:
        """Every student enrolled under this model version."""
        members = self.client.smembers(_key(self.version, "students"))
        return sorted(m.decode() if isinstance(m, bytes) else str(m) for m in members)

    def load_readable(self) -> GalleryLoad:
        """Every student's templates that open, and why each of the others does not.

        One tampered or foreign-key template, or a template key overwritten with another type,
        must not keep a worker from serving everybody else: it is reported (see
        :class:`GalleryLoad`) and its student is left out.
        """
        students = self.students()
        self.cipher.refresh()
        load = GalleryLoad({}, {})
        for start in range(0, len(students), 1000):
            chunk = students[start : start + 1000]
            pipe = self.client.pipeline(transaction=False)
            for student in chunk:
                pipe.get(self.template_key(student))
            dim = int(self.client.get(_key(self.version, "dim")) or 0)
            # Errors come back in place of the value: one key of another type fails its own
            # GET only.  Connection errors still raise.
            for student, raw in zip(chunk, pipe.execute(raise_on_error=False), strict=True):
                if raw is None:
                    continue
                if isinstance(raw, redis.RedisError):
                    if waiting_may_cure(raw):
                        raise raw
                    load.unreadable[student] = f"Redis refused: {type(raw).__name__}: {raw}"
                    continue
                try:
                    load.templates[student] = self._decode(student, raw, dim)
                except (FacegateError, ValueError) as error:
                    # ValueError: a plaintext value whose length is not a whole template.
                    load.unreadable[student] = str(error)
        return load


@dataclass(frozen=True)
class GalleryLoad:
    """What :meth:`GalleryStore.load_readable` found: the templates, and per student that
    could not be read, the reason (no key, unknown key id, failed authentication...)."""

    templates: dict[str, Vector]
    unreadable: dict[str, str]


@dataclass(frozen=True)
class Candidate:
    """A gallery student and the probe's similarity to them."""

    student_id: str
    score: float


# 1:N candidates re-scored exactly after the int8 first pass: at least this many, and at
# least this many times k.
SHORTLIST_MIN = 64
SHORTLIST_PER_K = 8


class GalleryIndex:
    """The in-memory gallery one worker matches against; safe to update while matching.

    One normalised mean template per student lives in a row of a preallocated float32 buffer;
    search reads a snapshot (the buffer's first ``n`` rows) without holding the lock.  An
    enrolment appends a row past every snapshot (amortised O(1)); re-enrolling with the same
    templates (the enrolment replay at every worker start) changes nothing; new templates for
    an enrolled student, or a removal, copy the rows (O(N), rare), so no snapshot ever sees a
    row change under it.

    From ``int8_from`` students up (0: never), 1:N search first scores an int8 copy of the
    gallery (:mod:`inference_worker.gallery_scan`) and re-scores a shortlist exactly.  The copy
    is rebuilt in a background thread after each change; until it is ready, search scans the
    float32 templates, so a change is never matched against stale rows.
    """

    def __init__(self, dim: int, int8_from: int = 0) -> None:
        self.dim = dim
        self.int8_from = int8_from
        self._lock = threading.Lock()
        self._templates: dict[str, Vector] = {}
        self._ids: list[str] = []  # row -> student; only appended to while shared
        self._rows: dict[str, int] = {}  # student -> row
        self._buffer: Vector = np.zeros((0, dim), dtype=np.float32)
        self._means: Vector = self._buffer[:0]  # the rows in use: a new view after each change
        self._scan: Int8Scan | None = None
        self._scan_wanted = threading.Event()
        self._scan_ready = threading.Condition(self._lock)
        self._builder: threading.Thread | None = None

    def __len__(self) -> int:
        return len(self._means)

    def __contains__(self, student_id: object) -> bool:
        return student_id in self._templates

    def replace_all(self, templates: dict[str, Vector]) -> None:
        """Load a whole gallery at once."""
        normalised = {k: normalise(v) for k, v in templates.items()}
        ids = sorted(normalised)
        buffer = np.zeros((_capacity(len(ids)), self.dim), dtype=np.float32)
        if ids:
            buffer[: len(ids)] = normalise(np.stack([normalised[s].mean(axis=0) for s in ids]))
        with self._lock:
            self._templates = normalised
            self._set_rows(ids, buffer)

    def upsert(self, student_id: str, templates: Vector) -> None:
        """Add or replace one student."""
        if templates.ndim != 2 or templates.shape[1] != self.dim or not len(templates):
            raise ValueError(
                f"templates of {student_id!r}: shape {templates.shape}, want (k, {self.dim})"
            )
        templates = normalise(templates)
        mean = normalise(templates.mean(axis=0, keepdims=True))[0]
        with self._lock:
            old = self._templates.get(student_id)
            if old is not None and np.array_equal(old, templates):
                return  # unchanged (an enrolment event replayed)
            self._templates[student_id] = templates
            row = self._rows.get(student_id)
            n = len(self._means)
            if row is not None:
                buffer = self._buffer.copy()
                buffer[row] = mean
                self._set_rows(self._ids, buffer)
                return
            buffer = self._buffer
            if n == len(buffer):
                buffer = np.zeros((_capacity(n + 1), self.dim), dtype=np.float32)
                buffer[:n] = self._means
            buffer[n] = mean  # past every snapshot's rows
            self._ids.append(student_id)
            self._rows[student_id] = n
            self._publish(buffer, n + 1)

    def remove(self, student_id: str) -> None:
        """Forget one student."""
        with self._lock:
            if self._templates.pop(student_id, None) is None:
                return
            row = self._rows[student_id]
            ids = self._ids[:row] + self._ids[row + 1 :]
            buffer = np.zeros((_capacity(len(ids)), self.dim), dtype=np.float32)
            buffer[: len(ids)] = np.delete(self._means, row, axis=0)
            self._set_rows(ids, buffer)

    def _set_rows(self, ids: list[str], buffer: Vector) -> None:
        """Install new rows (a fresh ids list: snapshots keep the old one); lock held."""
        self._ids = list(ids)
        self._rows = {student: row for row, student in enumerate(self._ids)}
        self._publish(buffer, len(self._ids))

    def _publish(self, buffer: Vector, n: int) -> None:
        """Make the first ``n`` rows of ``buffer`` the gallery; lock held."""
        self._buffer = buffer
        self._means = buffer[:n]
        self._scan = None
        if self.int8_from and n >= self.int8_from:
            self._scan_wanted.set()
            if self._builder is None:
                self._builder = threading.Thread(
                    target=self._build_scans, name="gallery-int8", daemon=True
                )
                self._builder.start()

    def _build_scans(self) -> None:
        """Rebuild the int8 copy after changes (several changes in a row cost one build)."""
        while True:
            self._scan_wanted.wait()
            self._scan_wanted.clear()
            with self._lock:
                means = self._means
            if len(means) < max(self.int8_from, 1):
                continue
            try:
                scan = Int8Scan(means)
            except Exception:  # the float32 scan keeps answering; say why the copy is missing
                log.exception("int8 copy of %d templates not built", len(means))
                continue
            with self._lock:
                if self._means is means:  # no change landed meanwhile
                    self._scan = scan
                    self._scan_ready.notify_all()

    def wait_for_int8(self, timeout_s: float) -> bool:
        """Wait until the int8 copy of the current gallery is ready (benchmarks, tests)."""
        with self._lock:
            return self._scan_ready.wait_for(
                lambda: self._scan is not None and self._scan.means is self._means, timeout_s
            )

    def verify(self, probe: Vector, student_id: str) -> float | None:
        """1:1: the best cosine similarity of the probe with the student's templates."""
        templates = self._templates.get(student_id)
        if templates is None:
            return None
        return float(np.max(templates @ probe))

    def search(self, probes: Vector, k: int = 5) -> list[list[Candidate]]:
        """1:N: the top-k students for each probe (rows of ``probes``), best first."""
        with self._lock:
            ids, means, scan = self._ids, self._means, self._scan
        n = len(means)  # ``ids`` may grow past the snapshot meanwhile: only its first n count
        if not n:
            return [[] for _ in range(len(probes))]
        k = min(k, n)
        shortlist = max(SHORTLIST_MIN, SHORTLIST_PER_K * k)
        if scan is not None and scan.means is means and shortlist < n:
            # int8 first pass, then the shortlist re-scored exactly in float32.
            rows = scan.shortlist(probes, shortlist)
            scores = np.einsum("md,mkd->mk", probes, means[rows])
        else:
            scores = probes @ means.T
            rows = np.broadcast_to(np.arange(n), scores.shape)
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        results = []
        for row_scores, row_ids, candidates in zip(scores, rows, top, strict=True):
            ordered = candidates[np.argsort(-row_scores[candidates])]
            results.append([Candidate(ids[row_ids[i]], float(row_scores[i])) for i in ordered])
        return results

    def students(self) -> Iterable[str]:
        """The enrolled student ids, sorted."""
        with self._lock:
            return sorted(self._rows)


def _capacity(rows: int) -> int:
    """Rows to allocate for ``rows`` students: room to grow by a quarter (at least 1024)."""
    return max(1024, rows + rows // 4)
