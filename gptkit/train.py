"""The training loop: finetune (or pretrain) a GPT on a prepared dataset.

    python -m gptkit.train config/finetune_shakespeare.py [--key=value ...]

`train(cfg)` reads top to bottom: check the settings, pick the device and precision, check the
memory, claim out_dir, build the model, optimizer and data (each a small function here), then
`fit` runs the loop: every `eval_interval` iterations `evaluate` estimates train and val loss on
fixed batches and `save` checkpoints (`ckpt.pt` when val improves, or always with
`always_save_checkpoint`, else `latest.pt`), and in between `train_step` makes one optimizer step.
`init_from=resume` continues from the last checkpoint, bit for bit.

One loop serves a single process, DDP and FSDP (`scripts/ddp_finetune.py` initialises the
process group, then calls `train`): the ranks share each step's micro-batches, and rank 0
alone prints, logs and writes.
"""

import contextlib
import json
import math
import os
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from gptkit import (
    allocator,
    checkpoint,
    choices,
    cpu_kernels,
    distributed,
    files,
    lora,
    memory,
    objectives,
    peft_format,
    runguard,
    sources,
)
from gptkit.config import FSDP_NO_LORA, TrainConfig, check_dataset_settings, lora_and_train_layers, parse_args, validate
from gptkit.data import Batches, ExampleBatches, LabelledBatches, PairBatches, dataset_kind, read_meta
from gptkit.device import dtype_choice, peak_flops, resolve_device
from gptkit.errors import GptkitError, run_cli
from gptkit.metrics import MetricsWriter, check_sinks
from gptkit.model import GPT
from gptkit.resume import check_resume, describe_resume


def lr_at(it: int, cfg: TrainConfig) -> float:
    """Constant, or linear warmup then cosine decay to min_lr."""
    if not cfg.decay_lr:
        return cfg.learning_rate
    if it < cfg.warmup_iters:
        return cfg.learning_rate * (it + 1) / (cfg.warmup_iters + 1)
    if it > cfg.lr_decay_iters:
        return cfg.min_lr
    ratio = (it - cfg.warmup_iters) / max(1, cfg.lr_decay_iters - cfg.warmup_iters)
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (cfg.learning_rate - cfg.min_lr)


def describe_schedule(cfg: TrainConfig) -> list[str]:
    """The learning-rate schedule in one line; a second when max_iters cuts it short of its peak or its end.

    nanoGPT's defaults (warmup 2000, decay to 600000) are made for long pretraining runs: a run of
    a few hundred iterations would otherwise never see the rate it asked for, and nothing said so.
    """
    if not cfg.decay_lr:
        return [f"learning rate: constant {cfg.learning_rate:.3g}"]
    lines = [
        f"learning rate: warmup to {cfg.learning_rate:.3g} at iteration {cfg.warmup_iters}, "
        f"cosine down to min_lr {cfg.min_lr:.3g} at {cfg.lr_decay_iters}"
    ]
    last = max(0, cfg.max_iters - 1)  # the last iteration that steps
    highest = lr_at(min(cfg.warmup_iters, last), cfg)  # warmup rises to its peak, the cosine falls from it
    if cfg.warmup_iters > cfg.max_iters:
        lines.append(
            f"  max_iters={cfg.max_iters} stops inside the warmup: the highest rate this run reaches is "
            f"{highest:.3g}, not {cfg.learning_rate:.3g}; set --warmup_iters and --lr_decay_iters below "
            "max_iters, or --decay_lr=False for a constant rate"
        )
    elif cfg.lr_decay_iters > cfg.max_iters:
        end = lr_at(last, cfg)
        share = (cfg.learning_rate - end) / max(cfg.learning_rate - cfg.min_lr, 1e-30)
        lines.append(
            f"  max_iters={cfg.max_iters} stops before the decay ends: the rate reaches {highest:.3g} and ends at "
            f"{end:.3g}, {100 * share:.0f}% of the way down to min_lr; --lr_decay_iters={cfg.max_iters} "
            "decays it fully"
        )
    return lines


# --- the objects a run is made of ------------------------------------------------------------
@dataclass(frozen=True)
class World:
    """This process's place in the job: one process, or one rank of DDP / FSDP."""

    rank: int = 0
    size: int = 1
    distributed: bool = False  # in a process group (torchrun), even of one process
    fsdp: bool = False  # shard the model, gradients and AdamW state instead of copying them

    @classmethod
    def current(cls, fsdp: bool) -> "World":
        if not (dist.is_available() and dist.is_initialized()):
            return cls()
        return cls(dist.get_rank(), dist.get_world_size(), True, fsdp)

    @property
    def master(self) -> bool:
        return self.rank == 0


@dataclass(frozen=True)
class Precision:
    """The dtype the matmuls run in, and the autocast context that makes them."""

    dtype: torch.dtype
    why: str  # why --dtype=auto chose it ("" when chosen by hand)
    device_type: str

    def autocast(self):
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)


@dataclass
class TrainState:
    """What the loop moves on, all of it saved in every checkpoint."""

    iter_num: int = 0
    best_val_loss: float = float("inf")
    evals_since_best: int = 0
    tokens_seen: int = 0  # the real tokens of the batches trained on, padding left out

    def record_eval(self, val_loss: float) -> bool:
        """Note one evaluation; True if it is the best so far."""
        improved = val_loss < self.best_val_loss
        if improved:
            self.best_val_loss, self.evals_since_best = val_loss, 0
        else:
            self.evals_since_best += 1
        return improved


@dataclass
class Run:
    """Everything `fit` works with, built by `train`'s setup steps."""

    cfg: TrainConfig
    world: World
    device: torch.device
    precision: Precision
    model: GPT  # the model itself (sharded under FSDP)
    net: torch.nn.Module  # what the forward pass calls: the model, compiled and/or DDP-wrapped
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    train_data: Batches | ExampleBatches  # windows of a token stream, or whole examples
    val_data: Batches | ExampleBatches
    out: Path
    objective: objectives.LanguageModelling | objectives.Classification | objectives.Preference  # loss, metrics
    lora: dict | None = None  # a LoRA run's settings and base reference (checkpoint.lora_settings)
    peak_flops: float = 0.0  # of all ranks together, for MFU (0: unknown)
    estimate: memory.MemoryEstimate | None = None
    resumed_from: Path | None = None
    cpu_matmul: dict | None = None  # the CPU matmul routes it computes with (cpu_kernels.measure_routes)
    watch: list[choices.Question] | None = None  # --watch_choices: scored at every evaluation

    @property
    def labels(self) -> list | None:
        """A classifier's label names, in the order of its head's outputs (None: a language model)."""
        return read_meta(self.train_data.data_dir).get("labels") if self.objective.name == "classification" else None

    @property
    def examples(self) -> bool:
        return isinstance(self.train_data, ExampleBatches)

    @property
    def rows_per_batch(self) -> int:
        """Rows of a micro-batch: batch_size, or two a pair for preference pairs."""
        return self.cfg.batch_size * (2 if isinstance(self.train_data, PairBatches) else 1)

    @property
    def positions_per_iter(self) -> int:
        """Token positions in one step's batches: those computed for a stream, at most this for
        examples (a micro-batch is as wide as its longest row, and computes its real tokens)."""
        cfg = self.cfg
        return self.rows_per_batch * cfg.gradient_accumulation_steps * cfg.block_size


# --- setup steps -----------------------------------------------------------------------------
def training_device(cfg: TrainConfig, world: World) -> torch.device:
    device = resolve_device(cfg.device)  # one line naming what this machine has, if it lacks it
    if world.distributed and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))  # one GPU per process
        torch.cuda.set_device(device)
    return device


def training_precision(cfg: TrainConfig, device: torch.device, resume: checkpoint.Resume | None) -> Precision:
    """`--dtype`, except that a resumed `auto` run keeps the precision it was trained in.

    On CPU `auto` is decided by a measurement, which a busy machine could tip the other way;
    a resumed run must compute exactly what the uninterrupted one would have.
    """
    name = cfg.dtype
    if name == "auto" and resume is not None and resume.ckpt is not None:
        name = resume.ckpt.dtype or "auto"  # not recorded: measure
    dtype, why = dtype_choice(name, device.type, autocast=True)
    return Precision(dtype, why, device.type)


@contextlib.contextmanager
def claimed_out_dir(cfg: TrainConfig, world: World) -> Iterator[Path]:
    """out_dir, created, checked and locked for this run (rank 0), until the block ends. A run that
    fails before it writes anything (a base that does not load, ...) leaves no empty folder behind."""
    out = Path(cfg.out_dir)
    made = world.master and not out.exists()
    try:
        with contextlib.ExitStack() as held:
            if world.master:
                files.check_writable_dir(out, "--out_dir")
                held.enter_context(runguard.OutDirLock(out))  # refuses if another live run writes here
                existing = [n for n in (checkpoint.BEST, checkpoint.LATEST) if (out / n).exists()]
                if cfg.init_from != "resume" and existing and not cfg.overwrite_out_dir and not cfg.eval_only:
                    raise GptkitError(
                        f"{out} already holds {existing[0]} from an earlier run: continue it with "
                        "--init_from=resume, pick a new --out_dir, or pass --overwrite_out_dir=True to replace it"
                    )
            if world.distributed:
                dist.barrier()  # rank 0 checked out_dir before anyone goes on
            yield out
    except BaseException:
        if made:  # the lock is let go by now, its file removed
            with contextlib.suppress(OSError):
                out.rmdir()  # only an empty folder: rmdir refuses one with anything in it
        raise


def build_model(cfg: TrainConfig, resume: checkpoint.Resume | None, precision: Precision) -> tuple[GPT, dict | None]:
    """The model this run starts from, whole, on the CPU, and its LoRA settings (None: full finetune)."""
    model, settings = sources.for_training(cfg, resume).load(cfg.dropout)
    sources.add_classifier(cfg, model)  # a LoRA run's head was added before its adapters
    if not settings:
        choose_trained_layers(cfg, model)
    elif cfg.train_layers != TrainConfig.train_layers:  # a LoRA run by its source: a peft adapter, a resumed run
        raise GptkitError(lora_and_train_layers(cfg.train_layers, f"init_from={cfg.init_from} (LoRA adapters)"))
    if cfg.block_size > model.config.block_size:
        raise GptkitError(
            f"block_size {cfg.block_size} is larger than the model's context of "
            f"{model.config.block_size}: use {model.config.block_size} or less"
        )
    if cfg.block_size < model.config.block_size:
        model.crop_block_size(cfg.block_size)
    if settings and precision.dtype != torch.float32:
        lora.hold_base_in(model, precision.dtype)  # frozen: autocast's dtype is precision enough
    return model, settings


def choose_trained_layers(cfg: TrainConfig, model: GPT) -> None:
    """A classifier trains `train_layers`: all, the last block with the final LayerNorm and the head,
    or the head alone. The frozen layers below get no backward pass at all: autograd stops at the
    first layer whose input needs no gradient."""
    if model.score is None or cfg.train_layers == "all":
        return
    for p in model.parameters():
        p.requires_grad_(False)
    trained = [model.score] + (
        [model.transformer.h[-1], model.transformer.ln_f] if cfg.train_layers == "last_block" else []
    )
    for module in trained:
        for p in module.parameters():
            p.requires_grad_(True)


def placed_model(cfg, resume, precision, world: World, device: torch.device) -> tuple[GPT, dict | None]:
    """`build_model` on this device, or under FSDP sharded from rank 0's copy (the others never hold it whole)."""
    if not world.fsdp:
        model, settings = build_model(cfg, resume, precision)
        return model.to(device), settings
    if (resume is not None and resume.ckpt.lora) or peft_format.is_peft_dir(cfg.init_from):
        raise GptkitError(FSDP_NO_LORA)  # a LoRA run, resumed or started from a peft adapter
    # Before the optimizer, which must hold the shards.
    model = distributed.shard_from_rank0(lambda: build_model(cfg, resume, precision)[0], device, precision.dtype)
    choose_trained_layers(cfg, model)  # the sharded model is made anew: freeze its frozen layers again
    layout = distributed.describe_shards(model)  # a collective: every rank takes part
    if world.master:
        print(layout)
    return model, None


def build_optimizer(cfg: TrainConfig, model: GPT, device: torch.device, precision: Precision, world: World):
    optimizer = model.configure_optimizers(cfg.weight_decay, cfg.learning_rate, (cfg.beta1, cfg.beta2), device.type)
    # Under FSDP each rank checks only its gradient shards for inf/nan: the sharded scaler makes
    # the ranks agree on skipping a step.
    scaler = distributed.ShardedGradScaler if world.fsdp else torch.amp.GradScaler
    return optimizer, scaler(device.type, enabled=precision.dtype == torch.float16)


SPLITS = ("train", "val")
REFERENCE_FILE = "reference_logps.npz"  # a DPO run's precomputed reference, kept for --init_from=resume


def build_data(cfg: TrainConfig, model: GPT, device: torch.device):
    """The train and val batches: random windows of a token stream, or whole examples (padded)."""
    data_dir, vocab = Path(cfg.data_root) / cfg.dataset, model.config.vocab_size
    if dataset_kind(data_dir) == "preference":
        if cfg.init_from == "scratch":
            raise GptkitError(
                f"{data_dir} holds preference pairs, and DPO tunes a model against the one it starts from: "
                "a random model is no reference worth keeping; start from a finetuned model (--init_from=gpt2, "
                "a HF directory, or an SFT run's export)"
            )
        return tuple(PairBatches(data_dir, s, cfg.batch_size, cfg.block_size, device, cfg.seed, vocab) for s in SPLITS)
    if dataset_kind(data_dir) == "classification":
        return tuple(
            LabelledBatches(data_dir, s, cfg.batch_size, cfg.block_size, device, cfg.seed, vocab) for s in SPLITS
        )
    if dataset_kind(data_dir) != "examples":
        return tuple(
            Batches(data_dir, s, cfg.batch_size, cfg.block_size, device, cfg.seed, vocab) for s in ("train", "val")
        )
    return tuple(
        ExampleBatches(data_dir, s, cfg.batch_size, cfg.block_size, device, cfg.seed, cfg.mask_prompt, vocab)
        for s in ("train", "val")
    )


def build_objective(cfg: TrainConfig, model: GPT, settings: dict | None):
    """The run's objective; DPO's reference is the LoRA model with adapters off, or (None) precomputed."""
    kind = dataset_kind(Path(cfg.data_root) / cfg.dataset)
    use_adapters = cfg.dpo_reference == "adapters" or (cfg.dpo_reference == "auto" and settings)
    if kind == "preference" and cfg.dpo_reference == "adapters" and not settings:
        raise GptkitError("dpo_reference=adapters needs a LoRA run (--lora_rank=8, ...): use precompute")
    # Example micro-batches are right-padded to their longest: the blocks compute their real tokens only.
    unpad = True
    reference = objectives.AdaptersOff(model, unpad) if kind == "preference" and use_adapters else None
    return objectives.for_dataset(
        kind,
        best_by=cfg.best_by,
        beta=cfg.dpo_beta,
        average=cfg.dpo_average_logps,
        reference_model=reference,
        unpad=unpad,
    )


def attach_reference(run: "Run", resume: checkpoint.Resume | None) -> None:
    """A precomputed DPO reference: the starting model's log-probabilities of every pair, computed
    once and written to out_dir, so a resumed run (whose model has moved) reads them back."""
    if not isinstance(run.train_data, PairBatches) or run.objective.reference_model is not None:
        return
    path = run.out / REFERENCE_FILE
    if resume is not None:
        if not path.is_file():
            raise GptkitError(f"{path} is missing: a DPO run resumes with the reference it began with")
        with np.load(path) as saved:
            stored = {split: saved[split] for split in SPLITS}
    else:
        average, autocast, cfg = run.cfg.dpo_average_logps, run.precision.autocast, run.cfg
        datasets = dict(zip(SPLITS, (run.train_data, run.val_data), strict=True))
        data_dir = Path(cfg.data_root) / cfg.dataset
        if "test" in read_meta(data_dir).get("splits", {}):  # for gptkit.evaluate's held-out reward accuracy
            datasets["test"] = PairBatches(data_dir, "test", cfg.batch_size, cfg.block_size, run.device)
        unpad = run.objective.unpad
        stored = {s: objectives.reference_logps(run.model, d, average, autocast, unpad) for s, d in datasets.items()}
        if run.world.master and not run.cfg.eval_only:
            files.atomic_write(path, lambda f: np.savez(f, **stored))
    run.train_data.set_reference(stored["train"])
    run.val_data.set_reference(stored["val"])


def cpu_matmul_routes(device: torch.device, world: World, resume: checkpoint.Resume | None) -> dict | None:
    """The CPU matmul routes of this run: a resumed run's own, else this process's measurement,
    rank 0's for every rank (one set of kernels, so every rank's numbers resume the same)."""
    if device.type != "cpu":
        return None
    routes = (resume.ckpt.cpu_matmul if resume is not None else None) or cpu_kernels.measure_routes()
    if world.distributed:
        shared = [routes]
        dist.broadcast_object_list(shared, src=0)
        routes = shared[0]
    return routes


def wrapped(model: GPT, cfg: TrainConfig, world: World, device: torch.device) -> torch.nn.Module:
    net = torch.compile(model) if cfg.compile else model
    if world.distributed and not world.fsdp:
        from torch.nn.parallel import DistributedDataParallel as DDP

        net = DDP(net, device_ids=[device.index] if device.type == "cuda" else None)
    return net


def setup(cfg: TrainConfig, world: World, out: Path, resume, precision, device, estimate) -> tuple[Run, TrainState]:
    """Build the run's objects and, when resuming, put back the checkpoint's state."""
    torch.manual_seed(cfg.seed + world.rank)
    model, settings = placed_model(cfg, resume, precision, world, device)
    model.grad_checkpoint = cfg.grad_checkpoint
    optimizer, scaler = build_optimizer(cfg, model, device, precision, world)
    train_data, val_data = build_data(cfg, model, device)
    objective = build_objective(cfg, model, settings)
    run = Run(
        cfg, world, device, precision, model, model, optimizer, scaler, train_data, val_data, out, objective, settings
    )
    run.estimate, run.resumed_from = estimate, resume.path if resume else None
    run.cpu_matmul = cpu_matmul_routes(device, world, resume)
    if run.cpu_matmul is not None:  # on a CPU: its matmuls on these routes, the blockwise loss
        cpu_kernels.speed_up(model, run.cpu_matmul)
    # A step's work is the whole job's, shared by all ranks' devices: MFU is against their summed peak.
    run.peak_flops = peak_flops(device.type, cfg.mfu_peak_flops) * world.size
    run.watch = choices.read_choices(cfg.watch_choices) if cfg.watch_choices else None  # before anything is written
    attach_reference(run, resume)
    state = TrainState()
    if resume is not None:
        restore(run, state, resume.ckpt)
    run.net = wrapped(model, cfg, world, device)
    return run, state


# --- checkpoints -----------------------------------------------------------------------------
def rng_state(device: torch.device) -> dict:
    rng = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(device)
    return rng


def save(run: Run, state: TrainState, best: bool) -> None:
    """Checkpoint the run (rank 0 writes): ckpt.pt if `best`, else latest.pt.

    Under DDP every rank calls this to hand in its RNG state: each draws its own dropout masks,
    and keeping every rank's generator is what makes a resumed run continue bit for bit.
    """
    rngs = [rng_state(run.device)]
    if run.world.distributed:
        rngs = [None] * run.world.size
        dist.all_gather_object(rngs, rng_state(run.device))
    if run.world.fsdp:  # every rank hands in its shards, rank 0 receives the whole state on its CPU
        model_state, optim_state = distributed.full_state(run.model, run.optimizer)
    else:  # a LoRA run keeps only its adapters, and in "lora" the reference to its frozen base
        model_state = lora.lora_state_dict(run.model) if run.lora else run.model.state_dict()
        optim_state = run.optimizer.state_dict()
    if not run.world.master:
        return
    ckpt = checkpoint.training_checkpoint(
        model=model_state,
        optimizer=optim_state,
        scaler=run.scaler.state_dict(),
        model_config=run.model.config,
        config=asdict(run.cfg),
        dtype=run.precision.dtype,
        progress=asdict(state),
        rngs=rngs,
        sampler=run.train_data.state_dict(),
        lora=run.lora,
        cpu_matmul=run.cpu_matmul,
        labels=run.labels,
    )
    checkpoint.write(ckpt, run.out, best)


def restore(run: Run, state: TrainState, ckpt: checkpoint.Checkpoint) -> None:
    """Put a checkpoint's optimizer, scaler, counters, RNG and sampler state back into `run`."""
    if run.world.fsdp:
        distributed.load_optimizer_state(run.model, run.optimizer, ckpt.optimizer)
    else:
        run.optimizer.load_state_dict(ckpt.optimizer)
    for group in run.optimizer.param_groups:
        group["lr"] = run.cfg.learning_rate  # a resumed run follows the learning rate the config asks for
    if ckpt.scaler:
        run.scaler.load_state_dict(ckpt.scaler)
    for key, value in ckpt.progress.items():
        setattr(state, key, value)
    rngs = ckpt.rng
    same_world = len(rngs) == run.world.size
    rng = rngs[run.world.rank] if same_world else rngs[0]
    torch.set_rng_state(rng["torch"].cpu())
    if "cuda" in rng and run.device.type == "cuda":
        torch.cuda.set_rng_state(rng["cuda"].cpu(), run.device)
    if not same_world and run.world.rank > 0:
        torch.manual_seed(run.cfg.seed + run.world.rank)  # saved with another process count: keep masks distinct
    run.train_data.load_state_dict(ckpt.sampler)


# --- one step, one evaluation ----------------------------------------------------------------
def train_step(run: Run, lr: float) -> tuple[float, objectives.Work]:
    """Forward/backward over this rank's micro-batches, then one AdamW step.

    Returns the step's mean loss over its units (target tokens, examples, pairs: the objective's)
    and what the step computed on all processes together (`objectives.Work`: its real tokens, the
    positions computed, ...). Every unit weighs the same, whichever micro-batch or process it
    lands in: each micro-batch adds its summed loss over the whole step's count of units (so
    micro-batches of padded examples, which hold different numbers of targets, are not averaged
    as equals).
    """
    cfg, world = run.cfg, run.world
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    local_steps = cfg.gradient_accumulation_steps // world.size
    step = run.train_data.draw_step(local_steps, world.rank, world.size)  # the same draw on every rank
    # DDP and FSDP average the gradients over the processes, where a sum over the step is wanted.
    scale = world.size / step.num_targets
    loss_sum, works = torch.zeros((), device=run.device, dtype=torch.float64), []
    for micro, rows in enumerate(step.micro_batches):
        batch = run.train_data.batch(rows)
        # DDP averages gradients across ranks once, on the last micro-step. FSDP reduce-scatters
        # them after every micro-step: holding whole gradients until the last one would cost the
        # memory that sharding saves.
        defer_sync = world.distributed and not world.fsdp and micro < local_steps - 1
        with run.net.no_sync() if defer_sync else contextlib.nullcontext():
            with run.precision.autocast():
                loss, _, work = run.objective(run.net, batch)
            run.scaler.scale(loss * scale).backward()
        loss_sum += loss.detach().double()
        works.append(work)
    if cfg.grad_clip > 0:
        run.scaler.unscale_(run.optimizer)
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), cfg.grad_clip)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.optimizer.zero_grad(set_to_none=True)
    # float64 holds the counts exactly (below 2**53)
    counts = torch.tensor([sum(column) for column in zip(*works, strict=True)], device=run.device, dtype=torch.float64)
    totals = torch.cat([loss_sum.view(1), counts])
    if world.distributed:
        dist.all_reduce(totals)
    loss_total, *work = totals.tolist()
    return loss_total / step.num_targets, objectives.Work(*(int(n) for n in work))


@torch.no_grad()
def evaluate(run: Run) -> dict[str, dict[str, float]]:
    """The objective's metrics ({"loss": ..., ...}) over the same evaluation batches of each split,
    shared out across ranks.

    Unit-weighted (summed losses over summed units), not a mean of batch means: padded example
    batches hold different numbers of targets.
    """
    cfg, world, names = run.cfg, run.world, run.objective.SUMS
    run.model.eval()
    metrics = {}
    for split, data in (("train", run.train_data), ("val", run.val_data)):
        total = torch.zeros(len(names), device=run.device, dtype=torch.float64)
        for batch in data.eval_batches(cfg.eval_iters, world.rank, world.size):
            with run.precision.autocast():
                sums = run.objective(run.model, batch).sums
            total += torch.stack([sums[name].double() for name in names])
        if world.fsdp:
            distributed.idle_forwards(run.model, data.eval_count(cfg.eval_iters), world.rank, world.size, run.device)
        if world.distributed:
            dist.all_reduce(total)
        metrics[split] = run.objective.metrics(dict(zip(names, total.tolist(), strict=True)))
    if run.watch:  # every rank scores the whole file: the same forwards in step, under FSDP too
        watched = choices.score_choices(run.model, run.watch, cfg.batch_size)[0]
        metrics["val"] |= {"choices_acc": watched["acc"], "choices_acc_norm": watched["acc_norm"]}
    run.model.train()
    return metrics


# --- what the user sees ----------------------------------------------------------------------
class RunLog:
    """The progress bar, the printed lines and the metrics (rank 0; the other ranks stay quiet).

    Each record goes to metrics.jsonl, and to TensorBoard and W&B when asked for (`MetricsWriter`).
    """

    def __init__(self, run: Run, state: TrainState):
        cfg, self.master = run.cfg, run.world.master
        self.t_start, self.metrics = time.time(), None
        self.bar = tqdm(
            total=cfg.max_iters,
            initial=state.iter_num,
            disable=not (self.master and cfg.progress),
            unit="it",
            dynamic_ncols=True,
            file=sys.stdout,
        )
        if not self.master:
            return
        self.metrics = MetricsWriter.for_run(cfg, run.out, state.iter_num if run.resumed_from else None)
        # atomic: a live plot (gptkit.widgets) may read it at any moment
        config_text = json.dumps(asdict(cfg), indent=2) + "\n"
        files.atomic_write(run.out / "config.json", lambda f: f.write(config_text.encode()))

    def print(self, text: str) -> None:
        if self.master:
            self.bar.write(text)

    def eval(self, run: Run, it: int, metrics: dict, lr: float, state: TrainState) -> None:
        watched = f", choices acc_norm {metrics['val']['choices_acc_norm']:.1%}" if run.watch else ""
        self.print(f"step {it}: {run.objective.eval_line(metrics)}{watched}")
        if not self.master:
            return
        record = {f"{split}_{name}": value for split in ("train", "val") for name, value in metrics[split].items()}
        record |= dict(lr=lr, tokens=state.tokens_seen, time=time.time() - self.t_start)
        self.metrics.write(type="eval", iter=it, **record)

    def step(
        self, run: Run, it: int, loss: float, lr: float, dt: float, work: objectives.Work, state: TrainState
    ) -> None:
        """One step's line: tokens/s and MFU count the positions the model computed, not the padding."""
        if not self.master:
            return
        tok_s = work.positions / dt
        mfu = None
        if run.peak_flops:
            # Attention's FLOPs grow with the length of each token's row: the step's mean, not block_size
            seq_len = work.attended / work.positions
            mfu = run.model.estimate_mfu(work.positions, dt, seq_len, run.peak_flops, work.forward_only)
        self.bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{tok_s:,.0f}", refresh=False)
        self.bar.update(1)
        if it % run.cfg.log_interval == 0:
            record = dict(loss=loss, lr=lr, tokens=state.tokens_seen, time=time.time() - self.t_start, dt=dt)
            if run.examples:
                record["epoch"] = round(run.train_data.epochs_done, 4)
            self.metrics.write(type="step", iter=it, **record, tokens_per_s=tok_s, mfu=mfu)

    def close(self, failed: bool = False) -> None:
        self.bar.close()
        if self.metrics is not None:
            self.metrics.close(failed)


def print_header(run: Run) -> None:
    if not run.world.master:
        return
    cfg, model, world = run.cfg, run.model, run.world
    if run.lora:
        trainable = lora.trainable_params(model)
        print(
            f"LoRA rank {run.lora['rank']} on {run.lora['targets']}: {trainable / 1e6:.2f}M trainable "
            f"parameters ({100 * trainable / model.num_params(False):.2f}%), base {run.lora['base']} frozen"
        )
    precision, processes = run.precision, f", over {world.size} processes" if world.size > 1 else ""
    rows = f"{cfg.batch_size} x 2" if isinstance(run.train_data, PairBatches) else f"{cfg.batch_size}"  # a pair: 2 rows
    shape = f"{rows} x {cfg.gradient_accumulation_steps} x {cfg.block_size}{processes}"
    if run.examples:  # padded to each micro-batch's longest row: tokens/s counts what is computed
        size = f"at most {run.positions_per_iter:,} token positions per iteration ({shape}; padding included, "
        size += "tokens/s and MFU count the positions computed)"
    else:
        size = f"{run.positions_per_iter:,} tokens per iteration ({shape})"
    print(
        f"{model.num_params() / 1e6:.2f}M parameters | {size} | {run.device} {str(precision.dtype)[6:]}"
        f"{f' (auto: {precision.why})' if precision.why else ''}"
    )
    for line in describe_schedule(cfg):
        print(line)
    if isinstance(run.train_data, PairBatches):
        reference = "adapters off" if run.objective.reference_model else f"precomputed, {REFERENCE_FILE}"
        print(
            f"{run.train_data.num_examples:,} training pairs, 2 rows each | "
            f"DPO beta {cfg.dpo_beta}, reference {reference}"
        )
    if run.labels is not None:
        data, trainable = run.train_data, lora.trainable_params(model)
        cut = f"; {data.num_cut:,} longer than block_size {cfg.block_size} are cut" if data.num_cut else ""
        print(f"{data.num_examples:,} training examples, {len(run.labels)} labels{cut}")
        what = "LoRA adapters and head" if run.lora else f"train_layers={cfg.train_layers}"
        print(f"{trainable:,} parameters train ({what}, {100 * trainable / model.num_params(False):.2f}%)")
        print(f"the best checkpoint and early stopping follow {run.objective.followed} (best_by={cfg.best_by})")
    elif run.examples:
        data, mask = run.train_data, "on responses only" if cfg.mask_prompt else "on whole examples"
        cut = f"; {data.num_cut:,} longer than block_size + 1 are cut" if data.num_cut else ""
        print(f"{data.num_examples:,} training examples, {int(data.targets.sum()):,} target tokens ({mask}){cut}")
    if run.estimate:
        print(f"memory estimate {run.estimate.describe()}{' per process' if world.size > 1 else ''}")


# --- the loop --------------------------------------------------------------------------------
def fit(run: Run, state: TrainState, stop: runguard.StopSignals, log: RunLog) -> dict:
    """Evaluate, checkpoint and step until max_iters, an early stop, or a stop signal."""
    cfg = run.cfg
    resumed_at = state.iter_num if run.resumed_from else None  # its evaluation is in the checkpoint already
    summary = {"stopped_early": False, "last_val_loss": None}
    while True:
        it, saved = state.iter_num, False
        lr = lr_at(it, cfg)
        if (it % cfg.eval_interval == 0 or it == cfg.max_iters) and it != resumed_at:
            metrics = evaluate(run)
            summary["last_val_loss"] = metrics["val"]["loss"]
            improved = state.record_eval(run.objective.score(metrics["val"]))
            log.eval(run, it, metrics, lr, state)
            if not cfg.eval_only and it > 0:  # step 0 is the untouched model: nothing to save
                save(run, state, best=improved or cfg.always_save_checkpoint)  # on every rank
                saved = True
            if cfg.early_stop_patience and state.evals_since_best >= cfg.early_stop_patience:
                objective = run.objective  # best_val_loss holds its score: 1 - accuracy for a classifier by accuracy
                log.print(
                    f"early stop: {objective.followed} has not improved for {state.evals_since_best} evaluations "
                    f"(best {objective.followed} {objective.unscore(state.best_val_loss):.4f})"
                )
                summary["stopped_early"] = True
                break
        if cfg.eval_only or it >= cfg.max_iters:
            break
        if signum := stop.should_stop(run.device):  # checked here, so a due evaluation ran first
            raise interrupted(run, state, signum, saved)

        t0 = time.time()
        loss, work = train_step(run, lr)
        dt = time.time() - t0
        if not math.isfinite(loss):
            raise GptkitError(
                f"the loss became {loss} at iteration {it}; no checkpoint was written for it. "
                "Lower --learning_rate, set --grad_clip=1.0, or use --dtype=float32"
            )
        state.iter_num += 1
        state.tokens_seen += work.tokens
        log.step(run, it, loss, lr, dt, work, state)
    # best_val_loss: the followed score, as checkpoints keep it; best and best_by: what it means
    best = {"best": run.objective.unscore(state.best_val_loss), "best_by": run.objective.followed}
    return summary | best | {"iter_num": state.iter_num, "best_val_loss": state.best_val_loss, "out_dir": str(run.out)}


def interrupted(run: Run, state: TrainState, signum: int, saved: bool) -> runguard.Interrupted:
    """Save the state a stop signal found (unless this iteration's evaluation just did); say where."""
    it, name = state.iter_num, signal.Signals(signum).name
    if it == 0:
        return runguard.Interrupted(signum, f"{name}: stopped before the first step; nothing to save")
    if not saved:
        save(run, state, best=False)  # latest.pt: ckpt.pt stays the best model
    path = checkpoint.latest_in(run.out) if run.world.master else run.out
    return runguard.Interrupted(
        signum, f"{name}: stopped at iteration {it}; its state is saved in {path}; continue with --init_from=resume"
    )


def train(cfg: TrainConfig) -> dict:
    """Run the training loop described by `cfg`; returns a summary of the run.

    out_dir is locked against other runs until train returns or raises. The first SIGINT
    (Ctrl-C) or SIGTERM stops the loop after its current step: latest.pt is saved, then
    `runguard.Interrupted` (a KeyboardInterrupt) is raised; a second signal stops at once.
    """
    world = World.current(cfg.fsdp)
    validate(cfg, world.size)
    data_dir = Path(cfg.data_root) / cfg.dataset
    if data_dir.is_dir():  # a missing dataset is build_data's error, which says how to prepare it
        check_dataset_settings(cfg, dataset_kind(data_dir), data_dir)  # a setting for another kind of data
    check_sinks(cfg)  # --tensorboard / --wandb_log: their package is installed
    device = training_device(cfg, world)
    allocator.fix_mmap_threshold(device.type)  # before anything big is allocated: the estimate counts on it
    # The checkpoint's header, read once: its dtype, its shape for the memory check, its state.
    resume = checkpoint.Resume.find(cfg.out_dir) if cfg.init_from == "resume" else None
    precision = training_precision(cfg, device, resume)
    # From the settings alone, before a folder is made or a weight loaded: stop if it cannot fit.
    shards = world.size if world.fsdp else 1  # FSDP keeps 1/N of the weights, gradients and AdamW state
    estimate = memory.check(cfg, device, precision.dtype, shards, world.size, resume)
    with claimed_out_dir(cfg, world) as out:
        if resume is not None:
            resume = resume.checked()  # its error, if any, comes after the lock's; reread if it changed
            # settings the checkpoint fixes are refused if they differ; the rest is listed as applied
            applied = check_resume(cfg, resume.ckpt.config, resume.path, resume.ckpt.dtype)
        run, state = setup(cfg, world, out, resume, precision, device, estimate)
        if resume is not None and world.master:
            objective, score = run.objective, state.best_val_loss  # a classifier's best so far, by best_by
            best = (objective.followed, objective.unscore(score)) if run.labels and math.isfinite(score) else None
            print(describe_resume(resume.path, state.iter_num, applied, best))
        print_header(run)
        log = RunLog(run, state)
        try:
            with runguard.StopSignals(announce=world.master) as stop:
                summary = fit(run, state, stop, log)
        except BaseException:
            log.close(failed=True)
            raise
        log.close()
        return summary


def main(argv: list[str] | None = None) -> None:
    cfg = parse_args(TrainConfig, sys.argv[1:] if argv is None else argv, "python -m gptkit.train")
    train(cfg)


if __name__ == "__main__":
    run_cli(main)
