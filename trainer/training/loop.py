"""The training loop: epochs of optimizer steps with accumulation, AMP, DDP and checkpoints.

Determinism is what makes resume exact: the per-epoch sample order comes from ``seed + epoch``,
flips from a hash, the data loader draws from its own seeded generator, and the checkpoint
carries the optimizer, scaler and generator states.  Step ``k`` of a resumed run therefore sees
the same batch and starts from the same state as step ``k`` of an uninterrupted one.

The learning rate follows a linear warm-up then a cosine decay over all epochs' steps, as a
function of the step alone (no scheduler state to save).

Epoch metrics (loss, accuracy of the head's plain cosines) average the steps run in that epoch
by this call, over all ranks; validation runs on rank 0 when an epoch completes, and only
completed epochs are reported to ``on_epoch`` (a stopped run's partial epoch is reported by
the run that resumes and finishes it).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from facegate.errors import FacegateError
from trainer.training.arcface import ArcFaceHead, FaceClassifier
from trainer.training.backbones import Backbone
from trainer.training.checkpoints import Checkpoint, CheckpointStore, capture_rng, restore_rng
from trainer.training.data import FaceCrops, ResumableSampler
from trainer.training.distributed import DistContext
from trainer.training.settings import AmpMode, TrainerSettings

log = logging.getLogger(__name__)

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class Precision:
    """Autocast dtype (None: float32) and whether a gradient scaler guards float16."""

    dtype: torch.dtype | None
    scaler: bool

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager[Any]:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.dtype)


def precision_for(mode: AmpMode, device: torch.device) -> Precision:
    """``auto``: float16 + scaler on CUDA, float32 on CPU; bf16 only when asked for."""
    if mode == "bf16":
        return Precision(torch.bfloat16, False)
    if mode == "fp16" and device.type != "cuda":
        raise FacegateError("amp fp16 needs CUDA; use bf16 or off on CPU")
    if mode == "fp16" or (mode == "auto" and device.type == "cuda"):
        return Precision(torch.float16, True)
    return Precision(None, False)


@dataclass(frozen=True)
class StepStats:
    """Loss and head accuracy of one optimizer step's samples."""

    loss: float
    correct: int
    count: int


def make_optimizer(
    model: FaceClassifier, settings: TrainerSettings, pretrained: bool
) -> torch.optim.SGD:
    """SGD with momentum; a pretrained backbone learns at ``lr * backbone_lr_scale``."""
    scale = settings.backbone_lr_scale if pretrained else 1.0
    groups = [
        {"params": [p for p in model.backbone.parameters() if p.requires_grad], "base_lr": 0.0},
        {"params": list(model.head.parameters()), "base_lr": 0.0},
    ]
    groups[0]["base_lr"] = settings.lr * scale
    groups[1]["base_lr"] = settings.lr
    for group in groups:
        group["lr"] = group["base_lr"]
    return torch.optim.SGD(
        groups, lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay
    )


def lr_factor(step: int, total_steps: int, warmup_steps: int) -> float:
    """Multiplier of the base learning rates at ``step`` (0-based)."""
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def set_lr(optimizer: torch.optim.Optimizer, factor: float) -> float:
    """Apply ``factor`` to every group's base rate; return the head's rate."""
    for group in optimizer.param_groups:
        group["lr"] = group["base_lr"] * factor
    return float(optimizer.param_groups[-1]["lr"])


def train_step(
    model: nn.Module,
    micro_batches: Sequence[Batch],
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    precision: Precision = Precision(None, False),
    scaler: torch.amp.GradScaler | None = None,
    clip_grad_norm: float | None = None,
) -> StepStats:
    """One optimizer step over ``micro_batches`` (gradient accumulation; DDP syncs once)."""
    optimizer.zero_grad(set_to_none=True)
    total = sum(len(labels) for _, labels in micro_batches)
    loss_sum, correct = 0.0, 0
    for i, (images, labels) in enumerate(micro_batches):
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        last = i == len(micro_batches) - 1
        no_sync = getattr(model, "no_sync", None)
        sync = contextlib.nullcontext() if last or no_sync is None else no_sync()
        with sync:
            with precision.autocast(device):
                logits, cosine = model(images, labels)
            loss = F.cross_entropy(logits, labels, reduction="sum") / total
            scaled = scaler.scale(loss) if scaler is not None else loss
            scaled.backward()  # type: ignore[no-untyped-call]
        loss_sum += float(loss.detach()) * total
        correct += int((cosine.argmax(dim=1) == labels).sum())
    if scaler is not None:
        scaler.unscale_(optimizer)
    if clip_grad_norm:
        params = [p for g in optimizer.param_groups for p in g["params"]]
        torch.nn.utils.clip_grad_norm_(params, clip_grad_norm)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    return StepStats(loss_sum / total, correct, total)


@dataclass
class FitResult:
    """Where a run ended and what each epoch measured."""

    step: int
    total_steps: int
    history: list[dict[str, float]] = field(default_factory=list)
    resumed_from_step: int | None = None

    @property
    def complete(self) -> bool:
        return self.step >= self.total_steps


class TrainingLoop:
    """Trains a backbone with an ArcFace head on labelled crops, resumable and distributed."""

    def __init__(
        self,
        backbone: Backbone,
        classes: Sequence[str],
        train_set: FaceCrops,
        settings: TrainerSettings,
        ctx: DistContext,
        *,
        manifest_version: str,
        run_name: str,
        checkpoints: CheckpointStore | None = None,
        validate: Callable[[nn.Module], dict[str, float]] | None = None,
        on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    ) -> None:
        self.settings = settings
        self.ctx = ctx
        self.backbone_info = backbone
        self.classes = list(classes)
        self.train_set = train_set
        self.manifest_version = manifest_version
        self.run_name = run_name
        self.checkpoints = checkpoints
        self.validate = validate
        self.on_epoch = on_epoch
        self.mlflow_run_id: str | None = None
        head = ArcFaceHead(
            backbone.embedding_dim,
            len(self.classes),
            settings.arcface_scale,
            settings.arcface_margin,
            settings.easy_margin,
        )
        self.model = FaceClassifier(backbone.module, head).to(ctx.device)
        self.optimizer = make_optimizer(self.model, settings, backbone.pretrained)
        self.precision = precision_for(settings.amp, ctx.device)
        self.scaler = torch.amp.GradScaler("cuda") if self.precision.scaler else None
        self.wrapped: nn.Module = self.model
        if ctx.distributed:
            ids = [ctx.device.index] if ctx.device.type == "cuda" else None
            self.wrapped = DistributedDataParallel(self.model, device_ids=ids)
        self.sampler = ResumableSampler(train_set, ctx.world_size, ctx.rank, settings.seed)
        micro_batches = self.sampler.num_samples // settings.batch_size
        self.steps_per_epoch = micro_batches // settings.grad_accumulation
        if self.steps_per_epoch == 0:
            raise FacegateError(
                f"{len(train_set)} training crops over {ctx.world_size} process(es) make no "
                f"full step of batch {settings.batch_size} x {settings.grad_accumulation}; "
                "lower the batch size or add data"
            )
        self.total_steps = settings.epochs * self.steps_per_epoch
        self.step = 0

    # ---- checkpoints ------------------------------------------------------------------------

    def checkpoint(self) -> Checkpoint:
        """The run's state now."""
        return Checkpoint(
            step=self.step,
            epoch=self.step // self.steps_per_epoch,
            model=self.model.backbone.state_dict(),
            head=self.model.head.state_dict(),
            optimizer=self.optimizer.state_dict(),
            scaler=self.scaler.state_dict() if self.scaler is not None else None,
            rng=capture_rng(),
            manifest_version=self.manifest_version,
            architecture=self.backbone_info.name,
            classes=self.classes,
            mlflow_run_id=self.mlflow_run_id,
        )

    def save_checkpoint(self) -> None:
        """Rank 0 writes the checkpoint; the others carry on."""
        if self.checkpoints is not None and self.ctx.is_main:
            where = self.checkpoints.save(self.run_name, self.checkpoint())
            log.info("checkpoint at step %d -> %s", self.step, where)

    def restore(self, checkpoint: Checkpoint) -> None:
        """Continue from ``checkpoint`` (same data, network and classes required)."""
        mismatches = [
            f"{what} {theirs!r} != {ours!r}"
            for what, theirs, ours in (
                ("dataset", checkpoint.manifest_version, self.manifest_version),
                ("architecture", checkpoint.architecture, self.backbone_info.name),
            )
            if theirs != ours
        ]
        if checkpoint.classes != self.classes:
            mismatches.append("class list differs")
        if mismatches:
            raise FacegateError(
                f"checkpoint of run {self.run_name} does not fit this run "
                f"({'; '.join(mismatches)}); use another run name or --no-resume"
            )
        self.model.backbone.load_state_dict(checkpoint.model)
        self.model.head.load_state_dict(checkpoint.head)
        self.optimizer.load_state_dict(checkpoint.optimizer)
        if self.scaler is not None and checkpoint.scaler is not None:
            self.scaler.load_state_dict(checkpoint.scaler)
        restore_rng(checkpoint.rng)
        self.step = checkpoint.step
        self.mlflow_run_id = checkpoint.mlflow_run_id

    # ---- training ---------------------------------------------------------------------------

    def _batches(self, epoch: int, skip_steps: int) -> Iterator[list[Batch]]:
        accumulation, batch_size = self.settings.grad_accumulation, self.settings.batch_size
        self.sampler.start_at(epoch, skip_steps * accumulation * batch_size)
        self.train_set.set_epoch(epoch)
        loader = DataLoader(
            self.train_set,
            batch_size=batch_size,
            sampler=self.sampler,
            num_workers=self.settings.num_workers,
            drop_last=True,
            pin_memory=self.ctx.device.type == "cuda",
            # Its own generator: creating the iterator must not consume the global one.
            generator=torch.Generator().manual_seed(self.settings.seed + epoch),
        )
        group: list[Batch] = []
        for images, labels in loader:
            group.append((images, labels))
            if len(group) == accumulation:
                yield group
                group = []

    def fit(self, resume_from: Checkpoint | None = None) -> FitResult:
        """Train until the last epoch or ``max_steps``; checkpoint along the way."""
        result = FitResult(step=0, total_steps=self.total_steps)
        if resume_from is not None:
            self.restore(resume_from)
            result.resumed_from_step = self.step
            log.info("resuming run %s at step %d", self.run_name, self.step)
        self.wrapped.train()
        limit = min(self.total_steps, self.settings.max_steps or self.total_steps)
        while self.step < limit:
            epoch = self.step // self.steps_per_epoch
            done_in_epoch = self.step % self.steps_per_epoch
            sums = torch.zeros(3, dtype=torch.float64)  # loss * n, correct, n
            bar = tqdm(
                total=self.steps_per_epoch,
                initial=done_in_epoch,
                desc=f"epoch {epoch + 1}/{self.settings.epochs}",
                unit="step",
                disable=not (self.settings.progress and self.ctx.is_main),
            )
            lr = 0.0
            for micro_batches in self._batches(epoch, done_in_epoch):
                lr = set_lr(
                    self.optimizer,
                    lr_factor(self.step, self.total_steps, self.settings.warmup_steps),
                )
                stats = train_step(
                    self.wrapped,
                    micro_batches,
                    self.optimizer,
                    self.ctx.device,
                    self.precision,
                    self.scaler,
                    self.settings.clip_grad_norm,
                )
                if not math.isfinite(stats.loss):
                    raise FacegateError(f"loss is {stats.loss} at step {self.step}; lower the lr")
                sums += torch.tensor([stats.loss * stats.count, stats.correct, stats.count])
                self.step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{stats.loss:.3f}", lr=f"{lr:.2e}")
                if self.step % self.settings.checkpoint_every == 0 or self.step >= limit:
                    self.save_checkpoint()
                if self.step >= limit or self.step % self.steps_per_epoch == 0:
                    break
            bar.close()
            finished_epoch = self.step % self.steps_per_epoch == 0
            metrics = self._epoch_metrics(sums, lr)
            if finished_epoch:
                if self.ctx.is_main and self.validate is not None:
                    metrics.update(self.validate(self.model.backbone))
                if self.step % self.settings.checkpoint_every != 0 and self.step < limit:
                    self.save_checkpoint()
            metrics["epoch"] = float(epoch + 1)
            metrics["step"] = float(self.step)
            metrics["epoch_complete"] = float(finished_epoch)
            result.history.append(metrics)
            # A stopped run's partial epoch is reported once its resumed run finishes it.
            if self.ctx.is_main and self.on_epoch is not None and finished_epoch:
                self.on_epoch(epoch + 1, metrics)
        result.step = self.step
        self.ctx.barrier()
        return result

    def _epoch_metrics(self, sums: torch.Tensor, lr: float) -> dict[str, float]:
        if self.ctx.distributed:
            reduced = sums.to(self.ctx.device)
            dist.all_reduce(reduced)
            sums = reduced.cpu()
        count = float(sums[2])
        if count == 0:
            return {"lr": lr}
        return {
            "loss": float(sums[0]) / count,
            "train_accuracy": float(sums[1]) / count,
            "lr": lr,
        }
