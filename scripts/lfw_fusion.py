"""Experiment: would fusing the two embedders' scores beat the champion on LFW?

Embeds every image of the LFW protocols once per model through the production path (the same
``load_pipeline`` and ``embed_files`` as ``facegate eval lfw``), then scores View 2 (10-fold
accuracy) and all pairs of the first 10 images per person (TAR at FAR 1e-3 and 1e-4) for the
fused similarity ``w * cos_a + (1 - w) * cos_b``: the cosine of the concatenated embeddings
``[sqrt(w) a, sqrt(1 - w) b]``.  With ``--flip`` each model embeds a face as the sum of the
unit embeddings of the aligned crop and its mirror image (test-time augmentation, twice the
embedding cost).  An experiment, not a product command: its results are quoted in the README
(issue 3, "What was tried").

    .venv/bin/python scripts/lfw_fusion.py --weights 1 0.7 0.5 0
    .venv/bin/python scripts/lfw_fusion.py --flip --weights 1
"""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from inference_worker.embedder import Embedder
from inference_worker.face_pipeline import LocalFacePipeline, get_pipeline
from trainer.evaluation import metrics
from trainer.evaluation.cli import default_lfw_dir, load_pipeline
from trainer.evaluation.embedding import EmbeddingTable, embed_files
from trainer.evaluation.lfw_plan import LfwOptions, LfwPlan, plan_lfw
from trainer.evaluation.pairs import pair_metrics, resolve_images, score_pairs


class MirroredEmbedder(Embedder):
    """Embeds a crop as the normalised sum of its own and its mirror image's unit embeddings."""

    def embed(self, crops: Sequence[npt.NDArray[np.uint8]]) -> npt.NDArray[np.float32]:
        if not crops:
            return super().embed(crops)
        mirrored = [np.ascontiguousarray(crop[:, ::-1]) for crop in crops]
        return self.postprocess(super().embed(crops) + super().embed(mirrored))


def mirrored_pipeline(model: str) -> LocalFacePipeline:
    """The serving pipeline of ``model`` with :class:`MirroredEmbedder` as its embedder."""
    pipeline = get_pipeline(model)
    pipeline.embedder = MirroredEmbedder(pipeline.embedder.model_dir).load()
    return pipeline


def embed(plan: LfwPlan, model: str, cache: Path, flip: bool = False) -> EmbeddingTable:
    """The clean protocol images embedded by ``model`` (cached in ``cache`` as .npz)."""
    keys = plan.clean_images
    path = cache / f"lfw_{model}{'_flip' if flip else ''}.npz"
    if path.exists():
        saved = np.load(path)
        if list(saved["keys"]) == keys:
            print(f"{model}: embeddings from {path}")
            return EmbeddingTable(
                keys, saved["emb"], saved["valid"], [None] * len(keys), [{}] * len(keys)
            )

    def progress(_label: str, done: int, total: int) -> None:
        if done == total or done % 2048 < 64:
            print(f"{model}: {done}/{total} images", flush=True)

    pipeline = mirrored_pipeline(model) if flip else load_pipeline(model)
    table = embed_files(
        keys, resolve_images(plan.layout.images, keys), pipeline, 64, None, progress
    )
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, keys=np.array(keys), emb=table.embeddings, valid=table.valid)
    return table


def fused(a: EmbeddingTable, b: EmbeddingTable, weight: float) -> EmbeddingTable:
    """Concatenated unit embeddings whose cosine is ``weight * cos_a + (1 - weight) * cos_b``."""
    embeddings = np.concatenate(
        [np.sqrt(weight) * a.embeddings, np.sqrt(1.0 - weight) * b.embeddings], axis=1
    ).astype(np.float32)
    valid = a.valid & b.valid
    return EmbeddingTable(a.keys, embeddings, valid, [None] * len(a.keys), [{}] * len(a.keys))


def report(plan: LfwPlan, table: EmbeddingTable) -> str:
    scores, _ = score_pairs(table, plan.view2)
    view2, _ = pair_metrics(scores, plan.view2.same, plan.view2.fold)
    subset = table.select(plan.all_pairs_images)
    _, codes = np.unique([plan.identity_of[k] for k in subset.keys], return_inverse=True)
    fars = (1e-3, 1e-4)
    pairs = metrics.all_pairs_scores(subset.embeddings, codes, fars, 16, subset.valid)
    tar = metrics.tar_at_far(pairs.genuine, pairs.impostor, fars).tar
    return (
        f"View 2 {view2['accuracy_mean'] * 100:.2f}% ± {view2['accuracy_std'] * 100:.2f}, "
        f"TAR@1e-3 {_percent(tar['1e-3'])}, TAR@1e-4 {_percent(tar['1e-4'])}"
    )


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.2f}%"


def misses(plan: LfwPlan, table: EmbeddingTable, far: float = 1e-4, worst: int = 15) -> str:
    """Where the genuine pairs rejected at ``far`` come from: a few bad images, or everywhere.

    An image whose mean similarity to its own person's other images is low (a wrong face, a
    labelling error) fails against all of them; the share of misses such images explain says
    whether face choice or the embedder is to blame.
    """
    subset = table.select(plan.all_pairs_images)
    _, codes = np.unique([plan.identity_of[k] for k in subset.keys], return_inverse=True)
    pairs = metrics.all_pairs_scores(subset.embeddings, codes, (far,), 16, subset.valid)
    threshold = metrics.tar_at_far(pairs.genuine, pairs.impostor, (far,)).threshold[
        metrics.far_key(far)
    ]
    if threshold is None:
        return f"too few impostor pairs for FAR {far:g}"
    vectors = np.where(subset.valid[:, None], subset.embeddings, 0.0)
    missed_pairs: list[tuple[int, int]] = []
    peer_mean: dict[int, float] = {}
    for code in np.unique(codes):
        rows = np.flatnonzero(codes == code)
        scores = vectors[rows] @ vectors[rows].T
        scores[~subset.valid[rows]] = -1.0  # an image without a face matches nothing
        scores[:, ~subset.valid[rows]] = -1.0
        for a, b in zip(*np.nonzero(np.triu(scores < threshold, k=1)), strict=True):
            missed_pairs.append((int(rows[a]), int(rows[b])))
        if rows.size > 1:
            for i, row in enumerate(rows):
                peer_mean[int(row)] = float((scores[i].sum() - scores[i, i]) / (rows.size - 1))
    missed = Counter(row for pair in missed_pairs for row in pair)
    outliers = {row for row in missed if peer_mean[row] < 0.2}
    explained = sum(1 for a, b in missed_pairs if a in outliers or b in outliers)
    lines = [
        f"FAR {far:g}: threshold {threshold:.3f}, {len(missed_pairs)} of {pairs.genuine.size} "
        f"genuine pairs missed, {len(missed)} images in them; {len(outliers)} images score "
        f"below 0.2 on average with their own person and explain {explained} misses",
        "misses  peers  mean-with-peers  image",
    ]
    for image, count in missed.most_common(worst):
        peers = int((codes == codes[image]).sum()) - 1
        lines.append(f"{count:6d}  {peers:5d}  {peer_mean[image]:15.3f}  {subset.keys[image]}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lfw", type=Path, default=None, help="LFW folder (default: shared)")
    parser.add_argument("--a", default="mobilefacenet", help="first model (weight w)")
    parser.add_argument("--b", default="dlib_resnet_v1", help="second model (weight 1 - w)")
    parser.add_argument("--weights", type=float, nargs="+", default=[1.0, 0.7, 0.6, 0.5, 0.0])
    parser.add_argument("--flip", action="store_true", help="mirror test-time augmentation")
    parser.add_argument(
        "--misses", action="store_true", help="where the first model's genuine misses come from"
    )
    parser.add_argument("--cache", type=Path, default=Path("reports/fusion"))
    args = parser.parse_args()
    plan = plan_lfw(args.lfw or default_lfw_dir(), LfwOptions())
    a = embed(plan, args.a, args.cache, args.flip)
    b = a if args.weights == [1.0] else embed(plan, args.b, args.cache, args.flip)
    for weight in args.weights:
        print(
            f"w={weight:.2f} ({args.a} {weight:.2f}, {args.b} {1 - weight:.2f}): "
            f"{report(plan, fused(a, b, weight))}",
            flush=True,
        )
    if args.misses:
        print(misses(plan, a), flush=True)


if __name__ == "__main__":
    main()
