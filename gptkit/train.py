"""The training loop: finetune (or pretrain) a GPT on a prepared dataset.

    python -m gptkit.train config/finetune_shakespeare.py [--key=value ...]

One loop serves a single process and DistributedDataParallel (`scripts/ddp_finetune.py`
initialises the process group, then calls `train`). Every `eval_interval` iterations it
estimates train and val loss on fixed batches, appends to `OUT_DIR/metrics.jsonl`, and
checkpoints: `ckpt.pt` when val improves (or always, with `always_save_checkpoint`), else
`latest.pt`, so `init_from=resume` continues from the last evaluation, bit for bit.
"""

import contextlib
import json
import math
import os
import signal
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm import tqdm

from gptkit import checkpoint, distributed, files, lora, memory, peft_format, runguard
from gptkit.config import TrainConfig, parse_args
from gptkit.data import Batches, read_meta
from gptkit.device import dtype_choice, peak_flops, pick_device
from gptkit.errors import GptkitError, run_cli
from gptkit.metrics import METRICS, MetricsWriter
from gptkit.model import GPT, GPTConfig
from gptkit.pretrained import GPT2_SIZES, from_pretrained


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


FSDP_NO_LORA = (
    "--fsdp=True does not shard LoRA runs (their optimizer state is small): leave --fsdp off to run LoRA with DDP"
)


def validate(cfg: TrainConfig, world_size: int) -> None:
    """Settings that cannot work, caught before any file is touched."""
    for key in (
        "batch_size",
        "gradient_accumulation_steps",
        "block_size",
        "eval_interval",
        "eval_iters",
        "log_interval",
    ):
        if getattr(cfg, key) < 1:
            raise GptkitError(f"{key} must be at least 1, not {getattr(cfg, key)}")
    if cfg.max_iters < 0:
        raise GptkitError(f"max_iters must be 0 or more, not {cfg.max_iters}")
    if not 0.0 <= cfg.dropout < 1.0:
        raise GptkitError(f"dropout must be in [0, 1), not {cfg.dropout}")
    if cfg.learning_rate <= 0:
        raise GptkitError(f"learning_rate must be positive, not {cfg.learning_rate}")
    if cfg.gradient_accumulation_steps % world_size:
        raise GptkitError(
            f"gradient_accumulation_steps={cfg.gradient_accumulation_steps} does not divide across "
            f"{world_size} processes: make it a multiple of {world_size}, or use another process count"
        )
    lora.check_settings(cfg.lora_rank, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_targets)
    if cfg.fsdp and world_size > 1 and (cfg.lora_rank or peft_format.is_peft_dir(cfg.init_from)):
        raise GptkitError(FSDP_NO_LORA)
    if cfg.lora_rank and cfg.init_from == "scratch":
        raise GptkitError(
            f"lora_rank={cfg.lora_rank} with init_from=scratch would train adapters on a frozen random model, "
            "which learns next to nothing: LoRA adapts pretrained weights, so use --init_from=gpt2 "
            "(or a HF directory), or --lora_rank=0 to train from scratch"
        )
    if cfg.init_from in GPT2_SIZES and cfg.block_size > 1024:
        raise GptkitError(f"block_size {cfg.block_size} is larger than GPT-2's context of 1024: use 1024 or less")


def prepare_out_dir(cfg: TrainConfig, held: contextlib.ExitStack | None = None) -> Path:
    """Create out_dir, check it is writable, lock it for this run (held until `held` closes),
    and refuse to overwrite another run's checkpoints."""
    out = Path(cfg.out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise GptkitError(f"cannot create out_dir {out}: {e.strerror}; choose another --out_dir") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise GptkitError(f"out_dir {out} is not writable: choose another --out_dir or fix its permissions")
    if held is not None:
        held.enter_context(runguard.OutDirLock(out))  # refuses if another live run writes here
    existing = [n for n in (checkpoint.BEST, checkpoint.LATEST) if (out / n).exists()]
    if cfg.init_from != "resume" and existing and not cfg.overwrite_out_dir and not cfg.eval_only:
        raise GptkitError(
            f"{out} already holds {existing[0]} from an earlier run: continue it with --init_from=resume, "
            "pick a new --out_dir, or pass --overwrite_out_dir=True to replace it"
        )
    return out


class Run:
    """Everything one training run holds: model, optimizer, data, counters."""

    def __init__(self, cfg: TrainConfig, held: contextlib.ExitStack | None = None):
        self.cfg = cfg
        self.ddp = dist.is_available() and dist.is_initialized()
        self.rank = dist.get_rank() if self.ddp else 0
        self.world = dist.get_world_size() if self.ddp else 1
        self.fsdp = self.ddp and cfg.fsdp  # one process: an ordinary run
        self.master = self.rank == 0
        validate(cfg, self.world)

        device = pick_device(cfg.device)
        if self.ddp and device.startswith("cuda"):
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
            torch.cuda.set_device(device)
        self.device = torch.device(device)
        self.dtype, self.dtype_why = dtype_choice(self.dtype_setting(), self.device.type, autocast=True)
        self.autocast = (
            torch.autocast(device_type=self.device.type, dtype=self.dtype)
            if self.dtype != torch.float32
            else contextlib.nullcontext()
        )
        # From the settings alone, before a folder is made or a weight loaded: stop if it cannot fit.
        shards = self.world if self.fsdp else 1  # FSDP keeps 1/N of the weights, gradients and AdamW state
        self.memory = memory.check(cfg, self.device, self.dtype, shards=shards, world=self.world)
        self.out = prepare_out_dir(cfg, held) if self.master else Path(cfg.out_dir)
        if self.ddp:
            dist.barrier()  # rank 0 checked out_dir before anyone goes on
        torch.manual_seed(cfg.seed + self.rank)

        ckpt, ckpt_path = None, None
        self.lora = None  # a LoRA run's settings and base reference (see gptkit.lora)
        if cfg.init_from == "resume":
            ckpt_path = checkpoint.latest_in(self.out)
            ckpt = checkpoint.load(ckpt_path, map_location="cpu")
            self.lora = ckpt.get("lora")  # a LoRA run stays one, with its settings, on the same base
            saved_rank = self.lora["rank"] if self.lora else 0
            if cfg.lora_rank and cfg.lora_rank != saved_rank:
                kind = f"a LoRA run of rank {saved_rank}" if saved_rank else "a full finetune"
                raise GptkitError(
                    f"{ckpt_path} is {kind}; a resumed run keeps its settings: drop --lora_rank "
                    "or start a new run in another --out_dir"
                )
        if self.fsdp:
            if self.lora:  # resumed from a LoRA run's checkpoint
                raise GptkitError(FSDP_NO_LORA)
            # Before the optimizer, which must hold the shards; only rank 0 builds the whole model.
            self.model = distributed.shard_from_rank0(
                lambda: self.whole_model(ckpt, ckpt_path), self.device, self.dtype
            )
            layout = distributed.describe_shards(self.model)
            if self.master:
                print(layout)
        else:
            self.model = self.whole_model(ckpt, ckpt_path).to(self.device)
        self.model.grad_checkpoint = cfg.grad_checkpoint

        data_dir = Path(cfg.data_root) / cfg.dataset
        vocab = self.model.config.vocab_size
        self.train_data = Batches(data_dir, "train", cfg.batch_size, cfg.block_size, self.device, cfg.seed, vocab)
        self.val_data = Batches(data_dir, "val", cfg.batch_size, cfg.block_size, self.device, cfg.seed, vocab)

        self.optimizer = self.model.configure_optimizers(
            cfg.weight_decay, cfg.learning_rate, (cfg.beta1, cfg.beta2), self.device.type
        )
        # Under FSDP each rank checks only its gradient shards for inf/nan: the sharded scaler
        # makes the ranks agree on skipping a step.
        scaler = distributed.ShardedGradScaler if self.fsdp else torch.amp.GradScaler
        self.scaler = scaler(self.device.type, enabled=self.dtype == torch.float16)
        self.iter_num, self.best_val_loss, self.evals_since_best = 0, float("inf"), 0
        self.tokens_seen = 0
        if ckpt is not None:
            self.restore(ckpt)

        self.net = torch.compile(self.model) if cfg.compile else self.model
        if self.ddp and not self.fsdp:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = DDP(self.net, device_ids=ids)
        # tokens_per_iter is the whole job's, shared by all ranks' devices: MFU is against their summed peak.
        self.peak = peak_flops(self.device.type, cfg.mfu_peak_flops) * self.world
        self.tokens_per_iter = cfg.batch_size * cfg.gradient_accumulation_steps * cfg.block_size

    def dtype_setting(self) -> str:
        """`--dtype`, except that a resumed `auto` run keeps the precision it was trained in.

        On CPU `auto` is decided by a measurement, which a busy machine could tip the other way;
        a resumed run must compute exactly what the uninterrupted one would have.
        """
        if self.cfg.init_from != "resume" or self.cfg.dtype != "auto":
            return self.cfg.dtype
        try:
            saved = checkpoint.load(checkpoint.latest_in(Path(self.cfg.out_dir))).get("dtype")  # mmap: header only
        except GptkitError:
            return "auto"  # no checkpoint (yet): the out_dir checks below say so, after the lock's
        return saved or "auto"  # checkpoints from before gptkit saved it

    def whole_model(self, ckpt: dict | None, ckpt_path: Path | None) -> GPT:
        """The model this run starts from, whole, on the CPU: resumed (from `ckpt`, read from
        `ckpt_path`), made from scratch, or pretrained."""
        cfg = self.cfg
        if ckpt is not None:
            model = checkpoint.model_from_checkpoint(ckpt, ckpt_path, dropout=cfg.dropout)
        elif cfg.init_from == "scratch":
            model = GPT(self.scratch_config())
        elif peft_format.is_peft_dir(cfg.init_from):  # its base and adapters; the LoRA settings are its config's
            model, self.lora = peft_format.read_peft_dir(cfg.init_from, cfg.dropout, cfg.lora_rank)
        else:
            model = from_pretrained(cfg.init_from, {"dropout": cfg.dropout})
            if cfg.lora_rank:
                self.lora = checkpoint.lora_settings(
                    cfg.lora_rank, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_targets, cfg.init_from, model
                )
                lora.apply_lora(model, cfg.lora_rank, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_targets)
        if cfg.block_size > model.config.block_size:
            raise GptkitError(
                f"block_size {cfg.block_size} is larger than the model's context of "
                f"{model.config.block_size}: use {model.config.block_size} or less"
            )
        if cfg.block_size < model.config.block_size:
            model.crop_block_size(cfg.block_size)
        if self.lora and self.dtype != torch.float32:
            lora.hold_base_in(model, self.dtype)  # frozen: autocast's dtype is precision enough
        return model

    def scratch_config(self) -> GPTConfig:
        cfg = self.cfg
        vocab = read_meta(Path(cfg.data_root) / cfg.dataset).get("vocab_size", 50257)
        return GPTConfig(cfg.block_size, vocab, cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.dropout, cfg.bias)

    # --- checkpoints -------------------------------------------------------------------------
    def rng_state(self) -> dict:
        rng = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return rng

    def state(self, rngs: list[dict], gathered: tuple[dict, dict] | None = None) -> dict:
        """The checkpoint; `rngs` holds every rank's RNG state, rank 0's first; `gathered`, FSDP's whole state."""
        if gathered is None:
            # A LoRA run keeps only its adapters, and in "lora" the reference to its frozen base.
            model = lora.lora_state_dict(self.model) if self.lora else self.model.state_dict()
            gathered = model, self.optimizer.state_dict()
        model_state, optim_state = gathered
        return {
            "model": checkpoint.clean_state_dict(model_state),
            "lora": self.lora,
            "optimizer": optim_state,
            "scaler": self.scaler.state_dict(),
            "model_args": asdict(self.model.config),
            "config": asdict(self.cfg),
            "dtype": str(self.dtype).removeprefix("torch."),  # what --dtype=auto chose
            "iter_num": self.iter_num,
            "best_val_loss": self.best_val_loss,
            "evals_since_best": self.evals_since_best,
            "tokens_seen": self.tokens_seen,
            "rng": rngs,
            "sampler": self.train_data.state_dict(),
        }

    def restore(self, ckpt: dict) -> None:
        if self.fsdp:
            distributed.load_optimizer_state(self.model, self.optimizer, ckpt["optimizer"])
        else:
            self.optimizer.load_state_dict(ckpt["optimizer"])
        # A resumed run follows the learning rate the current config asks for.
        for group in self.optimizer.param_groups:
            group["lr"] = self.cfg.learning_rate
        if ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.iter_num = ckpt["iter_num"]
        self.best_val_loss = ckpt["best_val_loss"]
        self.evals_since_best = ckpt.get("evals_since_best", 0)
        self.tokens_seen = ckpt.get("tokens_seen", 0)
        rngs = ckpt["rng"]
        same_world = len(rngs) == self.world
        rng = rngs[self.rank] if same_world else rngs[0]
        torch.set_rng_state(rng["torch"].cpu())
        if "cuda" in rng and self.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"].cpu(), self.device)
        if not same_world and self.rank > 0:
            torch.manual_seed(self.cfg.seed + self.rank)  # saved with another process count: keep masks distinct
        self.train_data.load_state_dict(ckpt["sampler"])

    def save(self, improved: bool, latest: bool = False) -> None:
        """Checkpoint (rank 0 writes); under DDP every rank calls this to hand in its RNG state.

        `latest=True` writes latest.pt whatever always_save_checkpoint says (a stop between evaluations).
        """
        rngs = [self.rng_state()]
        if self.ddp:
            # Each rank draws its own dropout masks: keeping every rank's generator is what makes
            # a resumed DDP run continue bit for bit, and keeps the ranks' masks distinct.
            rngs = [None] * self.world
            dist.all_gather_object(rngs, self.rng_state())
        # FSDP: every rank hands in its shards, rank 0 receives the whole state on its CPU.
        gathered = distributed.full_state(self.model, self.optimizer) if self.fsdp else None
        if not self.master:
            return
        if (self.cfg.always_save_checkpoint or improved) and not latest:
            files.atomic_save(self.state(rngs, gathered), self.out / checkpoint.BEST)
            (self.out / checkpoint.LATEST).unlink(missing_ok=True)  # ckpt.pt is the latest now
        else:
            files.atomic_save(self.state(rngs, gathered), self.out / checkpoint.LATEST)

    # --- evaluation --------------------------------------------------------------------------
    @torch.no_grad()
    def estimate_loss(self) -> dict[str, float]:
        """Mean loss over the same eval_iters batches of each split, shared out across ranks."""
        self.model.eval()
        out = {}
        for split, data in (("train", self.train_data), ("val", self.val_data)):
            total = torch.zeros(2, device=self.device, dtype=torch.float64)
            for x, y in data.eval_batches(self.cfg.eval_iters, self.rank, self.world):
                with self.autocast:
                    _, loss = self.model(x, y)
                total += torch.stack([loss.double(), torch.ones((), device=self.device, dtype=torch.float64)])
            if self.fsdp:
                distributed.idle_forwards(self.model, self.cfg.eval_iters, self.rank, self.world, self.device)
            if self.ddp:
                dist.all_reduce(total)
            out[split] = (total[0] / total[1]).item()
        self.model.train()
        return out

    # --- one optimizer step ------------------------------------------------------------------
    def step(self, lr: float) -> float:
        """Forward/backward over this rank's micro-batches, then one AdamW step; returns the mean loss."""
        cfg = self.cfg
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        # Every rank draws the whole iteration's windows, so the generators stay in step and
        # the global batch is the same whatever the number of ranks.
        offsets = self.train_data.draw_offsets(cfg.gradient_accumulation_steps * cfg.batch_size)
        offsets = offsets.reshape(cfg.gradient_accumulation_steps, cfg.batch_size)
        local_steps = cfg.gradient_accumulation_steps // self.world
        mine = offsets[self.rank * local_steps : (self.rank + 1) * local_steps]
        loss_sum = torch.zeros((), device=self.device)
        for micro, rows in enumerate(mine):
            x, y = self.train_data.windows(rows)
            last = micro == local_steps - 1
            # DDP averages gradients across ranks once, on the last micro-step. FSDP reduce-scatters
            # them after every micro-step: holding whole gradients until the last one (FSDP2's
            # set_requires_gradient_sync(False)) would cost the memory that sharding saves.
            sync = contextlib.nullcontext() if (last or not self.ddp or self.fsdp) else self.net.no_sync()
            with sync:
                with self.autocast:
                    # [1]: no name keeps this micro-batch's logits (B x T x 50257) alive into the next
                    loss = self.net(x, y)[1]
                self.scaler.scale(loss / local_steps).backward()
            loss_sum += loss.detach().float()
        if cfg.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        mean = loss_sum / local_steps
        if self.ddp:
            dist.all_reduce(mean, op=dist.ReduceOp.AVG)
        return mean.item()


def train(cfg: TrainConfig) -> dict:
    """Run the training loop described by `cfg`; returns a summary of the run.

    out_dir is locked against other runs until train returns or raises. The first SIGINT
    (Ctrl-C) or SIGTERM stops the loop after its current step: latest.pt is saved, then
    `runguard.Interrupted` (a KeyboardInterrupt) is raised; a second signal stops at once.
    """
    with contextlib.ExitStack() as held:
        return _train(cfg, held)


def _train(cfg: TrainConfig, held: contextlib.ExitStack) -> dict:
    run = Run(cfg, held)
    master = run.master
    resumed = cfg.init_from == "resume"
    metrics = MetricsWriter(run.out / METRICS, run.iter_num if resumed else None) if master else None
    if master:
        # atomic: a live plot (gptkit.widgets) may read it at any moment
        config_text = json.dumps(asdict(cfg), indent=2) + "\n"
        files.atomic_write(run.out / "config.json", lambda f: f.write(config_text.encode()))
        if run.lora:
            trainable = lora.trainable_params(run.model)
            print(
                f"LoRA rank {run.lora['rank']} on {run.lora['targets']}: {trainable / 1e6:.2f}M trainable "
                f"parameters ({100 * trainable / run.model.num_params(False):.2f}%), base {run.lora['base']} frozen"
            )
        print(
            f"{run.model.num_params() / 1e6:.2f}M parameters | {run.tokens_per_iter:,} tokens per iteration "
            f"({cfg.batch_size} x {cfg.gradient_accumulation_steps} x {cfg.block_size}"
            f"{f', over {run.world} processes' if run.world > 1 else ''}) | {run.device} {str(run.dtype)[6:]}"
            f"{f' (auto: {run.dtype_why})' if run.dtype_why else ''}"
        )
        if run.memory:
            print(f"memory estimate {run.memory.describe()}{' per process' if run.world > 1 else ''}")
    wandb = start_wandb(cfg) if (cfg.wandb_log and master) else None
    bar = tqdm(
        total=cfg.max_iters,
        initial=run.iter_num,
        disable=not (master and cfg.progress),
        unit="it",
        dynamic_ncols=True,
        file=sys.stdout,
    )
    summary = {"stopped_early": False, "last_val_loss": None}
    t_start, skip_eval, saved_at = time.time(), resumed, None
    stop = held.enter_context(runguard.StopSignals(announce=master))
    while True:
        it = run.iter_num
        lr = lr_at(it, cfg)
        if (it % cfg.eval_interval == 0 or it == cfg.max_iters) and not skip_eval:
            losses = run.estimate_loss()
            summary["last_val_loss"] = losses["val"]
            improved = losses["val"] < run.best_val_loss
            if improved:
                run.best_val_loss, run.evals_since_best = losses["val"], 0
            else:
                run.evals_since_best += 1
            if master:
                bar.write(f"step {it}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")
                metrics.write(
                    type="eval",
                    iter=it,
                    train_loss=losses["train"],
                    val_loss=losses["val"],
                    lr=lr,
                    tokens=run.tokens_seen,
                    time=time.time() - t_start,
                )
                if wandb:
                    wandb.log({"iter": it, "train/loss": losses["train"], "val/loss": losses["val"], "lr": lr})
            if not cfg.eval_only and it > 0:  # step 0 is the untouched model: nothing to save
                run.save(improved)  # on every rank: each hands in its RNG state, rank 0 writes
                saved_at = it
            if cfg.early_stop_patience and run.evals_since_best >= cfg.early_stop_patience:
                if master:
                    bar.write(
                        f"early stop: val loss has not improved for {run.evals_since_best} evaluations "
                        f"(best {run.best_val_loss:.4f})"
                    )
                summary["stopped_early"] = True
                break
        skip_eval = False
        if cfg.eval_only or it >= cfg.max_iters:
            break
        if signum := stop.should_stop(run.device):  # checked here, so a due evaluation ran first
            bar.close()
            raise stopped(run, signum, saved_at)

        t0 = time.time()
        loss = run.step(lr)
        dt = time.time() - t0
        if not math.isfinite(loss):
            raise GptkitError(
                f"the loss became {loss} at iteration {it}; no checkpoint was written for it. "
                "Lower --learning_rate, set --grad_clip=1.0, or use --dtype=float32"
            )
        run.iter_num += 1
        run.tokens_seen += run.tokens_per_iter
        if master:
            tok_s = run.tokens_per_iter / dt
            mfu = run.model.estimate_mfu(run.tokens_per_iter, dt, cfg.block_size, run.peak) if run.peak else None
            bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{tok_s:,.0f}", refresh=False)
            bar.update(1)
            if it % cfg.log_interval == 0:
                metrics.write(
                    type="step",
                    iter=it,
                    loss=loss,
                    lr=lr,
                    tokens=run.tokens_seen,
                    time=time.time() - t_start,
                    dt=dt,
                    tokens_per_s=tok_s,
                    mfu=mfu,
                )
    bar.close()
    if wandb:
        wandb.finish()
    summary.update(iter_num=run.iter_num, best_val_loss=run.best_val_loss, out_dir=str(run.out))
    return summary


def stopped(run: Run, signum: int, saved_at: int | None) -> runguard.Interrupted:
    """Save the state a stop signal found (unless this iteration's evaluation just did); say where."""
    it, name = run.iter_num, signal.Signals(signum).name
    if it == 0:
        return runguard.Interrupted(signum, f"{name}: stopped before the first step; nothing to save")
    if saved_at != it:
        run.save(improved=False, latest=True)  # latest.pt: ckpt.pt stays the best model
    # This iteration's evaluation saved ckpt.pt (and removed latest.pt), or latest.pt.
    path = run.out / (checkpoint.LATEST if (run.out / checkpoint.LATEST).exists() else checkpoint.BEST)
    return runguard.Interrupted(
        signum, f"{name}: stopped at iteration {it}; its state is saved in {path}; continue with --init_from=resume"
    )


def start_wandb(cfg: TrainConfig):
    try:
        import wandb
    except ImportError:
        raise GptkitError("wandb_log=True needs wandb: pip install wandb (or set --wandb_log=False)") from None
    wandb.init(project=cfg.wandb_project, name=cfg.wandb_run_name, config=asdict(cfg))
    return wandb


def main(argv: list[str] | None = None) -> None:
    cfg = parse_args(TrainConfig, sys.argv[1:] if argv is None else argv, "python -m gptkit.train")
    train(cfg)


if __name__ == "__main__":
    run_cli(main)
