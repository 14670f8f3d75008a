"""Pruning the dataset cache waits for the runs reading it.

A manual ``facegate train`` and the training service may share a cache; pruning deletes the
copies of images the store no longer holds, and a run that listed a crop at its start reads it
again at every epoch.  Both ends here are real (``flock`` on a temporary folder), the "run" is
a thread holding the cache as ``train`` does."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from trainer.datasets.manifest import DatasetManifest, SplitRule, manifest_version
from trainer.datasets.materialize import cache_in_use, crop_path, prune_cache


def _empty_manifest() -> DatasetManifest:
    return DatasetManifest(
        version=manifest_version([]),
        created_at="2026-12-04T00:00:00Z",
        sources=[],
        counts={},
        split=SplitRule(),
        entries=[],
    )


def test_pruning_waits_for_a_run_reading_the_cache(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    crop = crop_path(cache, "template-a", "ab" * 32)
    crop.parent.mkdir(parents=True)
    crop.write_bytes(b"crop of an image the store no longer holds")

    run_started, run_may_end = threading.Event(), threading.Event()

    def run() -> None:
        with cache_in_use(cache):
            run_started.set()
            run_may_end.wait(10)

    reader = threading.Thread(target=run)
    reader.start()
    assert run_started.wait(5)
    # Another run reading at the same time is not held up.
    with cache_in_use(cache):
        pass
    pruned: list[Path] = []
    pruner = threading.Thread(target=lambda: pruned.extend(prune_cache(cache, _empty_manifest())))
    pruner.start()
    time.sleep(0.5)
    assert pruner.is_alive() and crop.is_file(), "pruned under a running run"
    run_may_end.set()
    reader.join(5)
    pruner.join(5)
    assert not pruner.is_alive()
    assert pruned == [crop] and not crop.exists()
