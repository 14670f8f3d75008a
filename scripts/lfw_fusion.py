"""Experiment: would fusing the two embedders' scores beat the champion on LFW?

Embeds every image of the LFW protocols once per model through the production path (the same
``load_pipeline`` and ``embed_files`` as ``facegate eval lfw``), then scores View 2 (10-fold
accuracy) and all pairs of the first 10 images per person (TAR at FAR 1e-3 and 1e-4) for the
fused similarity ``w * cos_a + (1 - w) * cos_b``: the cosine of the concatenated embeddings
``[sqrt(w) a, sqrt(1 - w) b]``.  An experiment, not a product command: its result is quoted in
the README (issue 3, "What was tried").

    .venv/bin/python scripts/lfw_fusion.py --weights 1 0.7 0.5 0
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from trainer.evaluation import metrics
from trainer.evaluation.cli import default_lfw_dir, load_pipeline
from trainer.evaluation.embedding import EmbeddingTable, embed_files
from trainer.evaluation.lfw_plan import LfwOptions, LfwPlan, plan_lfw
from trainer.evaluation.pairs import pair_metrics, resolve_images, score_pairs


def embed(plan: LfwPlan, model: str, cache: Path) -> EmbeddingTable:
    """The clean protocol images embedded by ``model`` (cached in ``cache`` as .npz)."""
    keys = plan.clean_images
    path = cache / f"lfw_{model}.npz"
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

    table = embed_files(
        keys, resolve_images(plan.layout.images, keys), load_pipeline(model), 64, None, progress
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
        f"TAR@1e-3 {tar['1e-3'] * 100:.2f}%, TAR@1e-4 {tar['1e-4'] * 100:.2f}%"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lfw", type=Path, default=None, help="LFW folder (default: shared)")
    parser.add_argument("--a", default="mobilefacenet", help="first model (weight w)")
    parser.add_argument("--b", default="dlib_resnet_v1", help="second model (weight 1 - w)")
    parser.add_argument("--weights", type=float, nargs="+", default=[1.0, 0.7, 0.6, 0.5, 0.0])
    parser.add_argument("--cache", type=Path, default=Path("reports/fusion"))
    args = parser.parse_args()
    plan = plan_lfw(args.lfw or default_lfw_dir(), LfwOptions())
    a, b = embed(plan, args.a, args.cache), embed(plan, args.b, args.cache)
    for weight in args.weights:
        print(
            f"w={weight:.2f} ({args.a} {weight:.2f}, {args.b} {1 - weight:.2f}): "
            f"{report(plan, fused(a, b, weight))}",
            flush=True,
        )


if __name__ == "__main__":
    main()
