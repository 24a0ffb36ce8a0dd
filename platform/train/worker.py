"""What runs inside each Ray Train worker: the DeepSpeed engine, the step loop, checkpoints and restores."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from arfm import tracking
from arfm.config import JobConfig
from arfm.train.engine import (ATTEMPTS_FILE, DS_TAG, FAIL_MARKER, _weights_only_loads, deepspeed_config,
                               lr_lambda, micro_batch_size, rng_state, safe_load, set_rng_state)
from arfm.train.task import Task, get_task


def _say(message: str) -> None:
    """One progress line on the worker's stdout (Ray forwards it to the driver)."""
    sys.stdout.write(f"[arfm train] {message}\n")
    sys.stdout.flush()


def _prefetch_first(gen):
    """``gen`` with its first item fetched in a background thread now: Ray Data takes seconds to start
    streaming, which then overlaps with building the model and DeepSpeed's init."""
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(1, thread_name_prefix="arfm-prefetch")
    first = pool.submit(next, gen)
    pool.shutdown(wait=False)

    def items():
        yield first.result()
        yield from gen

    return items()


def _append_jsonl(path: Path, row: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fh.write(json.dumps(row) + "\n")


class _Worker:
    """Everything one Ray Train worker does. Collective calls happen on every rank in the same order."""

    def __init__(self, conf: dict[str, Any]):
        import ray.train

        checkpoint = ray.train.get_checkpoint()
        with checkpoint.as_directory() if checkpoint else contextlib.nullcontext(None) as d:
            self._setup(conf, Path(d) if d else None)

    def _setup(self, conf: dict[str, Any], ckpt: Path | None) -> None:
        import ray.train

        self.cfg = JobConfig.model_validate(conf["cfg"])
        self.task: Task = conf["task"] if not isinstance(conf["task"], str) else get_task(conf["task"])
        self.conf, self.run_dir = conf, Path(conf["run_dir"])
        ctx = ray.train.get_context()
        self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()
        t = self.cfg.train
        state = json.loads((ckpt / "train_state.json").read_text()) if ckpt else {}
        self.step, self.epoch, self.epoch_pos = (state.get(k, 0) for k in ("step", "epoch", "epoch_pos"))
        self.resumed_at = {"start_step": self.step, "epoch": self.epoch, "epoch_pos": self.epoch_pos}
        self.batches = _prefetch_first(self._batches(ray.train.get_dataset_shard("train")))  # overlaps init

        if not conf["use_gpu"]:
            os.environ["DS_ACCELERATOR"] = "cpu"  # before deepspeed is imported in this process
        import deepspeed
        import torch

        self.torch = torch
        torch.manual_seed(t.seed)  # identical initial weights on every rank
        model = self.task.build_model(self.cfg)
        decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
        no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
        groups = [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=t.lr, betas=tuple(t.betas))
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(self.cfg))
        self.engine, _, _, self.scheduler = deepspeed.initialize(
            model=model, optimizer=optimizer, lr_scheduler=scheduler, config=deepspeed_config(self.cfg),
            dist_init_required=False)
        self.device = self.engine.device
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(t.precision)
        self.ema: dict[str, Any] | None = None  # fp32 shadow on rank 0, {} on the other ranks
        self.safe_loads = [0]
        ema_sd = self._restore(ckpt, state) if ckpt else None
        torch.manual_seed(t.seed + 1000 * self.rank + self.step)  # dropout/noise streams differ per rank
        if t.ema_decay:
            if ema_sd is None:  # same branch on every rank: _full_params may be collective
                ema_sd = {n: v.detach().float().clone() for n, v in self._full_params()}
            self.ema = {k: v.to(self.device) for k, v in ema_sd.items()}
        self.logger = None
        if self.rank == 0 and conf.get("run_id"):
            self.logger = tracking.MetricLogger(conf["tracking_uri"], conf["run_id"])

    # -- state ------------------------------------------------------------------------------------------
    def _full_params(self):
        """(name, full fp32 parameter) on rank 0; collective under ZeRO partitioning / mixed precision."""
        from deepspeed.utils import safe_get_full_fp32_param

        simple = self.cfg.train.zero_stage == 0 and self.dtype is None
        for name, p in self.engine.module.named_parameters():
            full = p.detach() if simple else safe_get_full_fp32_param(p)
            if full is None:
                full = p.detach().float()
            if self.rank == 0:
                yield name, full

    def _update_ema(self) -> None:
        d = self.cfg.train.ema_decay
        with self.torch.no_grad():
            for name, full in self._full_params():
                self.ema[name].lerp_(full.to(self.ema[name].dtype), 1.0 - d)

    def _restore(self, d: Path, state: dict[str, Any]) -> dict[str, Any] | None:
        """Load the checkpoint in ``d`` (weights-only); return its EMA state ({} off rank 0) or None."""
        with _weights_only_loads(self.safe_loads):
            path, _ = self.engine.load_checkpoint(str(d), tag=DS_TAG)
        if path is None:
            raise RuntimeError(f"checkpoint {d} holds no DeepSpeed state under {DS_TAG}/")
        rng = d / f"rng_rank{self.rank}.pt"
        if rng.exists() and state.get("world_size") == self.world:
            set_rng_state(safe_load(rng))
        if (d / "ema.pt").exists() and self.cfg.train.ema_decay:
            return safe_load(d / "ema.pt") if self.rank == 0 else {}
        return None

    def _save(self, metrics: dict[str, Any], final: bool = False) -> dict[str, Any]:
        import tempfile

        import ray.train

        with tempfile.TemporaryDirectory(prefix="arfm-ckpt-") as tmp:
            tmp = Path(tmp)
            state = {"step": self.step, "epoch": self.epoch, "epoch_pos": self.epoch_pos,
                     "world_size": self.world}
            self.engine.save_checkpoint(str(tmp), tag=DS_TAG, client_state={"arfm": state})
            self.torch.save(rng_state(), tmp / f"rng_rank{self.rank}.pt")
            if self.rank == 0:
                (tmp / "train_state.json").write_text(json.dumps(state))
                if self.ema:
                    self.torch.save({k: v.cpu() for k, v in self.ema.items()}, tmp / "ema.pt")
            if final:
                metrics = {**metrics, **self._finalize(tmp / "model")}
            name = f"checkpoint_{self.step:08d}"  # taken already when a finished run is resumed without more steps:
            taken = len(list(self.run_dir.glob(name + "*"))) if self.rank == 0 else 0  # rank 0 decides for all
            taken = int(self._allreduce([float(taken)], op="max")[0])
            name += f"-{taken}" if taken else ""
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(str(tmp)),
                             checkpoint_dir_name=name)
        return metrics

    def _finalize(self, out_dir: Path) -> dict[str, Any]:
        """The task's final artifact (EMA weights when EMA is on), written by rank 0 into the last checkpoint."""
        simple = self.cfg.train.zero_stage == 0 and self.dtype is None and self.ema is None
        full = None if simple else dict(self._full_params())  # collective where partitioned
        if self.rank != 0:
            return {}
        model = self.engine.module
        if not simple:
            model = self.task.build_model(self.cfg)
            sd = model.state_dict()
            canonical = {id(p): n for n, p in self.engine.module.named_parameters()}
            for name, p in self.engine.module.named_parameters(remove_duplicate=False):  # tied names too
                src = (self.ema if self.ema is not None else full)[canonical[id(p)]]
                sd[name] = src.detach().to("cpu", sd[name].dtype)
            for name, b in self.engine.module.named_buffers():
                if name in sd:
                    sd[name] = b.detach().to("cpu", sd[name].dtype)
            model.load_state_dict(sd)
        out_dir.mkdir(parents=True, exist_ok=True)
        model.eval()
        summary = self.task.finalize(self.cfg, model, out_dir) or {}
        return {f"final/{k}": float(v) for k, v in summary.items()}

    # -- data ---------------------------------------------------------------------------------------------
    def _batches(self, shard):
        """Micro-batches forever, epoch after epoch; skips what the restored checkpoint already consumed."""
        micro = micro_batch_size(self.cfg)
        while True:
            it = shard.iter_batches(batch_size=micro, batch_format="numpy", drop_last=True,
                                    local_shuffle_buffer_size=max(4 * micro, 64),
                                    local_shuffle_seed=self.cfg.train.seed + 7919 * self.epoch + self.rank)
            n = 0
            for np_batch in it:
                n += 1
                if n <= self.epoch_pos:  # fast-forward to the saved data position
                    continue
                self.epoch_pos = n
                yield np_batch
            if n == 0:
                raise RuntimeError(f"worker {self.rank}: the training dataset gave no batch of {micro} rows; "
                                   "use a smaller train.batch_size or more data")
            self.epoch, self.epoch_pos = self.epoch + 1, 0

    def _to_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for k, v in batch.items():
            if isinstance(v, self.torch.Tensor):
                v = v.to(self.device, non_blocking=True)
                if self.dtype is not None and v.is_floating_point():
                    v = v.to(self.dtype)
            out[k] = v
        return out

    def _allreduce(self, values: list[float], op: str = "sum") -> list[float]:
        if self.world == 1:
            return values
        import torch.distributed as dist

        t = self.torch.tensor(values, dtype=self.torch.float64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
        return t.tolist()

    # -- loop ---------------------------------------------------------------------------------------------
    def run(self) -> None:
        t, cfg = self.cfg.train, self.cfg
        start_step = self.step
        engine_name, opt_name = type(self.engine).__name__, type(self.engine.optimizer).__name__
        if self.rank == 0:
            _append_jsonl(self.run_dir / ATTEMPTS_FILE, {
                **self.resumed_at, "world_size": self.world, "engine": engine_name,
                "optimizer": opt_name, "safe_loads": self.safe_loads[0], "time": time.time()})
            _say(f"rank 0/{self.world}: {engine_name} ({opt_name}, ZeRO-{t.zero_stage}, {t.precision},"
                  f" {self.device}) starting at step {start_step}/{t.steps}")
            if self.logger:
                self.logger.log({"attempt_start_step": start_step}, step=start_step)
                tracking.set_tags(self.conf["tracking_uri"], self.conf["run_id"],
                                  {"engine": engine_name, "zero_optimizer": opt_name})
        # The budget counts training time: worker start-up, DeepSpeed's one-off build and restores are not in it.
        budget = self.conf.get("time_budget_s")
        deadline = time.time() + budget if budget else None
        count_tokens = getattr(self.task, "count_tokens", None)
        sums: dict[str, float] = {}
        n_micro = samples = tokens = 0
        grad_norm = float("nan")
        window_t, window_steps, data_s = time.perf_counter(), 0, 0.0
        stopped = "completed"
        batches = self.batches
        last_metrics: dict[str, Any] = {"step": self.step, "engine": engine_name}
        while self.step < t.steps:
            t_data = time.perf_counter()
            batch = self.task.collate(cfg, next(batches))
            data_s += time.perf_counter() - t_data
            out = self.engine(self._to_device(batch))
            loss = out["loss"]
            boundary = self.engine.is_gradient_accumulation_boundary()
            self.engine.backward(loss)
            if boundary and t.zero_stage == 0 and self.dtype is None:  # DeepSpeed keeps no norm here
                grads = [p.grad for p in self.engine.module.parameters() if p.grad is not None]
                grad_norm = self.torch.nn.utils.get_total_norm(grads) if grads else 0.0
            self.engine.step()
            for k, v in out.items():  # summed on the device; read back only when logging (no per-step sync)
                if isinstance(v, self.torch.Tensor) and v.numel() == 1:
                    sums[k] = sums.get(k, 0.0) + v.detach().float()
            n_micro += 1
            samples += next((v.shape[0] for v in batch.values() if isinstance(v, self.torch.Tensor)), 0)
            # codec tokens (K x T per example; the same count for AR and FM) unless the task counts its own
            toks = batch.get("tokens")
            tokens += int(count_tokens(batch)) if count_tokens else toks.numel() if toks is not None else 0
            if not boundary:
                continue
            self.step += 1
            window_steps += 1
            if t.zero_stage > 0 or self.dtype is not None:
                gn = self.engine.get_global_grad_norm()
                grad_norm = gn if gn is not None else float("nan")
            if self.ema is not None:
                self._update_ema()
            if t.fail_at_step == self.step and self.rank == 0:
                marker = self.run_dir / FAIL_MARKER
                if not marker.exists():
                    marker.parent.mkdir(parents=True, exist_ok=True)
                    marker.write_text(str(self.step))
                    raise RuntimeError(f"injected failure at step {self.step} (train.fail_at_step)")
            stop = deadline is not None and self._allreduce([float(time.time() >= deadline)], op="max")[0] > 0
            if self.step % t.log_every == 0 or self.step == t.steps or stop:
                keys = sorted(sums)
                red = self._allreduce([float(sums[k]) for k in keys] + [n_micro, samples, tokens])
                grad_norm = float(grad_norm)
                dt = max(time.perf_counter() - window_t, 1e-9)
                m = {k: red[i] / max(red[-3], 1) for i, k in enumerate(keys)}
                m.update(lr=self.scheduler.get_last_lr()[0], grad_norm=grad_norm, epoch=self.epoch,
                         steps_per_s=window_steps / dt, samples_per_s=red[-2] / dt,
                         data_wait_frac=data_s / dt)
                if red[-1]:
                    m["tokens_per_s"] = red[-1] / dt
                last_metrics = {**m, "step": self.step, "engine": engine_name}
                if self.rank == 0:
                    _say(f"step {self.step}/{t.steps} loss {m.get('loss', float('nan')):.4f} "
                          f"lr {m['lr']:.2e} grad_norm {grad_norm:.3f} {m['steps_per_s']:.2f} steps/s "
                          f"{m['samples_per_s']:.1f} samples/s")
                    if self.logger:
                        self.logger.log(m, step=self.step)
                sums, n_micro, samples, tokens = {}, 0, 0, 0
                window_t, window_steps, data_s = time.perf_counter(), 0, 0.0
            if stop:
                stopped = "time_budget"
                break
            if self.step % t.checkpoint_every == 0 and self.step < t.steps:
                self._save(last_metrics)
        last_metrics.update(step=self.step, stopped=stopped, start_step=start_step)
        final = self._save(last_metrics, final=True)
        if self.rank == 0:
            _say(f"done at step {self.step} ({stopped})")
            if self.logger:
                self.logger.log({k: v for k, v in final.items() if k.startswith("final/")}, step=self.step)


def _train_loop_per_worker(conf: dict[str, Any]) -> None:
    _Worker(conf).run()


# ---------------------------------------------------------------------------------------------------- driver
