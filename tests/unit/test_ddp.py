"""Distributed data parallel on CPU (gloo): two processes started by torchrun take one step of
the real training loop on synthetic crops and must end with identical, changed weights.

Each rank seeds its network differently and sees different samples, so identical weights
after the step mean DDP broadcast the initial weights and averaged the gradients.  This file
is also the worker script: torchrun runs it with ``--worker OUT_DIR``.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
CLASSES = 4
PER_CLASS = 4


def _param_digest(module: object) -> str:
    import torch

    assert isinstance(module, torch.nn.Module)
    digest = hashlib.sha256()
    for name, param in sorted(module.state_dict().items()):
        if not name.endswith(("running_mean", "running_var", "num_batches_tracked")):
            digest.update(name.encode() + param.detach().cpu().numpy().tobytes())
    return digest.hexdigest()


def _write_crops(folder: Path) -> None:
    import cv2

    rng = np.random.default_rng(0)
    for label in range(CLASSES):
        for i in range(PER_CLASS):
            crop = rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)
            cv2.imwrite(str(folder / f"{label}_{i}.png"), crop)


def _worker(out_dir: Path) -> None:
    import torch

    from trainer.training.backbones import build_backbone
    from trainer.training.data import FaceCrops
    from trainer.training.distributed import init_distributed, shutdown_distributed
    from trainer.training.loop import TrainingLoop
    from trainer.training.settings import TrainerSettings

    ctx = init_distributed()
    torch.manual_seed(100 + ctx.rank)  # different initial weights per rank
    paths = sorted((out_dir / "crops").glob("*.png"))
    labels = [int(p.name.split("_")[0]) for p in paths]
    settings = TrainerSettings(
        architecture="iresnet-tiny",
        epochs=1,
        batch_size=4,
        max_steps=1,
        track="off",
        progress=False,
        checkpoint_store="local",
    )
    loop = TrainingLoop(
        build_backbone("iresnet-tiny"),
        [str(c) for c in range(CLASSES)],
        FaceCrops(paths, labels, flip=True),
        settings,
        ctx,
        manifest_version="synthetic",
        run_name="ddp-test",
    )
    before = _param_digest(loop.model)
    seen = [int(i) for i in loop.sampler]
    result = loop.fit()
    report = {
        "rank": ctx.rank,
        "world_size": ctx.world_size,
        "backend": torch.distributed.get_backend(),
        "before": before,
        "after": _param_digest(loop.model),
        "step": result.step,
        "samples": seen,
    }
    (out_dir / f"rank{ctx.rank}.json").write_text(json.dumps(report))
    shutdown_distributed()


def test_two_ranks_hold_identical_changed_weights(tmp_path: Path) -> None:
    (tmp_path / "crops").mkdir()
    _write_crops(tmp_path / "crops")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RANK", "WORLD_SIZE"))}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO_ROOT))
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--standalone",
        str(Path(__file__).resolve()),
        "--worker",
        str(tmp_path),
    ]
    done = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in reports] == [2, 2]
    assert [r["backend"] for r in reports] == ["gloo", "gloo"]
    assert [r["step"] for r in reports] == [1, 1]
    # DDP broadcast rank 0's initial weights, then both applied the same averaged gradients.
    assert reports[0]["before"] == reports[1]["before"]
    assert reports[0]["after"] == reports[1]["after"]
    assert reports[0]["after"] != reports[0]["before"]
    # Each rank trained on its own half of the samples.
    assert set(reports[0]["samples"]).isdisjoint(reports[1]["samples"])


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        _worker(Path(sys.argv[2]))
    else:
        pytest.main([__file__])
