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
from arfm.train import data as train_data
from arfm.train import progress
from arfm.train.engine import (ATTEMPTS_FILE, DS_TAG, FAIL_MARKER, BudgetClock, _weights_only_loads,
                               deepspeed_config, initial_model, lr_lambda, micro_batch_size, rng_state, safe_load,
                               set_rng_state)
from arfm.train.task import Task, get_task

VALID_SEED = 20_000_003  # the fixed draws (FM noise and t, inpainting spans) of every validation pass


def _say(message: str) -> None:
    """One progress line on the worker's stdout (Ray forwards it to the driver)."""
    sys.stdout.write(f"[arfm train] {message}\n")
    sys.stdout.flush()


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
        self.best: dict[str, Any] = {k: state[k] for k in ("best_step", "best_valid_loss") if k in state}
        self.resumed_at = {"start_step": self.step, "epoch": self.epoch, "epoch_pos": self.epoch_pos}
        self.feed = self._feed(conf["data_mode"])  # reading starts now and overlaps the model's start
        self.valid = self._validation()

        if not conf["use_gpu"]:
            os.environ["DS_ACCELERATOR"] = "cpu"  # before deepspeed is imported in this process
        import deepspeed
        import torch

        self.torch = torch
        torch.manual_seed(t.seed)  # identical initial weights on every rank
        if ckpt is None:  # a fresh start: fine-tuning loads its source here; a resumed run its checkpoint
            model = initial_model(self.task, self.cfg, _say if self.rank == 0 else None,
                                  self.run_dir if self.rank == 0 else None, conf.get("tracking_uri"))
        else:
            model = self.task.build_model(self.cfg)
        decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
        no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
        groups = [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=t.lr, betas=tuple(t.betas))
        self.clock = BudgetClock(conf.get("time_budget_s"))
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(self.cfg, self.clock))
        self.engine, _, _, self.scheduler = deepspeed.initialize(
            model=model, optimizer=optimizer, lr_scheduler=scheduler, config=deepspeed_config(self.cfg),
            dist_init_required=False)
        self.device = self.engine.device
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(t.precision)
        self.ema: dict[str, Any] | None = None  # fp32 shadow on rank 0, {} on the other ranks
        self.safe_loads = [0]
        self.best_sd: dict[str, Any] | None = None  # rank 0: the weights of the best validation (train.keep=best)
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
        if (d / "best.pt").exists() and self.rank == 0:
            self.best_sd = safe_load(d / "best.pt")
        if (d / "ema.pt").exists() and self.cfg.train.ema_decay:
            return safe_load(d / "ema.pt") if self.rank == 0 else {}
        return None

    def _save(self, metrics: dict[str, Any], final: bool = False) -> dict[str, Any]:
        import tempfile

        import ray.train

        with tempfile.TemporaryDirectory(prefix="arfm-ckpt-") as tmp:
            tmp = Path(tmp)
            self.epoch, self.epoch_pos = self.feed.position  # the next batch a restart must see
            state = {"step": self.step, "epoch": self.epoch, "epoch_pos": self.epoch_pos,
                     "world_size": self.world, **self.best}
            self.engine.save_checkpoint(str(tmp), tag=DS_TAG, client_state={"arfm": state})
            self.torch.save(rng_state(), tmp / f"rng_rank{self.rank}.pt")
            if self.rank == 0:
                (tmp / "train_state.json").write_text(json.dumps(state))
                if self.ema:
                    self.torch.save({k: v.cpu() for k, v in self.ema.items()}, tmp / "ema.pt")
                if self.best_sd is not None:
                    self.torch.save(self.best_sd, tmp / "best.pt")
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
        """The task's final artifact, written by rank 0 into the last checkpoint: the weights of the best
        validation (``train.keep=best``), else the EMA weights when EMA is on, else the last ones."""
        best = self.cfg.train.keep == "best" and self.best_sd is not None
        best = bool(self._allreduce([float(best)], op="max")[0])  # the same branch on every rank
        simple = self.cfg.train.zero_stage == 0 and self.dtype is None and self.ema is None and not best
        full = None if simple or best else dict(self._full_params())  # collective where partitioned
        if self.rank != 0:
            return {}
        model = self.engine.module
        if not simple:
            model = self.task.build_model(self.cfg)
            sd = model.state_dict()
            canonical = {id(p): n for n, p in self.engine.module.named_parameters()}
            source = self.best_sd if best else self.ema if self.ema is not None else full
            for name, p in self.engine.module.named_parameters(remove_duplicate=False):  # tied names too
                src = source[canonical[id(p)]]
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
    def _feed(self, mode: str) -> train_data.Feed:
        """Collated micro-batches forever from the restored ``(epoch, epoch_pos)`` (see :mod:`arfm.train.data`)."""
        import ray.train

        micro, cfg, task = micro_batch_size(self.cfg), self.cfg, self.task
        if mode == train_data.MEMORY:
            part = ray.train.get_dataset_shard(f"train_{self.rank}")

            def build() -> train_data.Feed:
                rows = train_data.read_rows(train_data.iter_np(part))
                epochs = train_data.memory_epochs(task, cfg, rows, micro, self.rank)
                return train_data.MemoryFeed(epochs, self.epoch, self.epoch_pos)

            return train_data.LazyFeed(build)
        return train_data.StreamFeed(ray.train.get_dataset_shard("train"), task, cfg, micro, self.rank,
                                     self.epoch, self.epoch_pos, prefetch=cfg.train.prefetch_batches)

    def _validation(self):
        """The validation batches of this rank (an equal share of ``valid``), read in the background."""
        import ray.train

        if not self.conf.get("has_valid"):
            return None
        source = ray.train.get_dataset_shard("valid")
        task, cfg, micro = self.task, self.cfg, micro_batch_size(self.cfg)

        def build():
            rows = train_data.read_rows(train_data.iter_np(source))
            return train_data.Validation.from_rows(task, cfg, rows, micro, self.rank, self.world)

        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(1, thread_name_prefix="arfm-valid")
        future = pool.submit(build)
        pool.shutdown(wait=False)
        return future

    def _validate(self) -> float | None:
        """Mean validation loss over every rank's share (all ranks run the same number of batches)."""
        if self.valid is None:
            return None
        val = self.valid.result()
        if val is None:
            return None
        total, rows = train_data.validation_loss(self.engine, val.batches, self._to_device, VALID_SEED)
        total, rows = self._allreduce([total, float(rows)])
        return total / rows if rows else None

    def _keep_if_best(self, valid_loss: float) -> None:
        if self.cfg.train.keep != "best" or valid_loss >= self.best.get("best_valid_loss", float("inf")):
            return
        self.best = {"best_step": self.step, "best_valid_loss": valid_loss}
        params = {n: v.detach().to("cpu", copy=True) for n, v in self._full_params()}  # collective
        self.best_sd = params if self.rank == 0 else None

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
    def _progress(self, state: str, m: dict[str, Any], started: float) -> None:
        if self.rank != 0:
            return
        t = self.cfg.train
        progress.write(self.run_dir, {
            "state": state, "step": self.step, "steps": t.steps, "loss": m.get("loss"),
            "valid_loss": self.last_valid, "steps_per_s": m.get("steps_per_s"),
            "data_wait_frac": m.get("data_wait_frac"), "elapsed_s": time.time() - started,
            "budget_s": self.conf.get("time_budget_s"), "epoch": self.epoch})

    def run(self) -> None:
        t, cfg = self.cfg.train, self.cfg
        start_step = self.step
        engine_name, opt_name = type(self.engine).__name__, type(self.engine.optimizer).__name__
        if self.rank == 0:
            _append_jsonl(self.run_dir / ATTEMPTS_FILE, {
                **self.resumed_at, "world_size": self.world, "engine": engine_name,
                "optimizer": opt_name, "safe_loads": self.safe_loads[0], "time": time.time()})
            _say(f"rank 0/{self.world}: {engine_name} ({opt_name}, ZeRO-{t.zero_stage}, {t.precision},"
                  f" {self.device}) starting at step {start_step}/{t.steps}, data {self.conf['data_mode']}")
            if self.logger:
                self.logger.log({"attempt_start_step": start_step}, step=start_step)
                tracking.set_tags(self.conf["tracking_uri"], self.conf["run_id"],
                                  {"engine": engine_name, "zero_optimizer": opt_name})
        # The budget counts training time: worker start-up, DeepSpeed's one-off build and restores are not in it.
        budget = self.conf.get("time_budget_s")
        started = time.time()
        deadline = started + budget if budget else None
        self.clock.start()
        count_tokens = getattr(self.task, "count_tokens", None)
        sums: dict[str, float] = {}
        n_micro = samples = tokens = 0
        grad_norm = float("nan")
        window_t, window_steps, data_s = time.perf_counter(), 0, 0.0
        waits: list[float] = []
        stopped = "completed"
        self.last_valid: float | None = None
        last_metrics: dict[str, Any] = {"step": self.step, "engine": engine_name}
        self._progress("training", {}, started)
        while self.step < t.steps:
            t_data = time.perf_counter()
            batch = next(self.feed)
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
            last = stop or self.step == t.steps
            if t.valid_every and (self.step % t.valid_every == 0 or last):
                t_valid = time.perf_counter()
                vl = self._validate()
                if vl is not None:
                    self.last_valid = vl
                    self._keep_if_best(vl)
                    if self.logger:
                        self.logger.log({"valid_loss": vl}, step=self.step)
                window_t += time.perf_counter() - t_valid  # throughput counts training time only
            if self.step % t.log_every == 0 or last:
                keys = sorted(sums)
                red = self._allreduce([float(sums[k]) for k in keys] + [n_micro, samples, tokens])
                grad_norm = float(grad_norm)
                dt = max(time.perf_counter() - window_t, 1e-9)
                m = {k: red[i] / max(red[-3], 1) for i, k in enumerate(keys)}
                m.update(lr=self.scheduler.get_last_lr()[0], grad_norm=grad_norm, epoch=self.feed.position[0],
                         steps_per_s=window_steps / dt, samples_per_s=red[-2] / dt,
                         data_wait_frac=data_s / dt)
                if red[-1]:
                    m["tokens_per_s"] = red[-1] / dt
                waits.append(m["data_wait_frac"])
                last_metrics = {**m, "step": self.step, "engine": engine_name}
                if self.rank == 0:
                    _say(f"step {self.step}/{t.steps} loss {m.get('loss', float('nan')):.4f} "
                          f"lr {m['lr']:.2e} grad_norm {grad_norm:.3f} {m['steps_per_s']:.2f} steps/s "
                          f"{m['samples_per_s']:.1f} samples/s wait {m['data_wait_frac']:.3f}")
                    if self.logger:
                        self.logger.log(m, step=self.step)
                    self._progress("training", m, started)
                sums, n_micro, samples, tokens = {}, 0, 0, 0
                window_t, window_steps, data_s = time.perf_counter(), 0, 0.0
            if stop:
                stopped = "time_budget"
                break
            if self.step % t.checkpoint_every == 0 and self.step < t.steps:
                self._save(last_metrics)
        last_metrics.update(step=self.step, stopped=stopped, start_step=start_step)
        if waits:  # the whole attempt's data wait, as one figure
            last_metrics["data_wait_frac_median"] = float(sorted(waits)[len(waits) // 2])
        if self.last_valid is not None:
            last_metrics["valid_loss"] = self.last_valid
        kept = "last"
        if t.keep == "best" and self.best:
            kept = "best"
            last_metrics.update(kept_step=self.best["best_step"], kept_valid_loss=self.best["best_valid_loss"])
        else:
            last_metrics["kept_step"] = self.step
        last_metrics["kept"] = kept
        self._progress("finalizing", last_metrics, started)
        final = self._save(last_metrics, final=True)
        if self.rank == 0:
            _say(f"done at step {self.step} ({stopped}); artifact: {kept} weights (step {last_metrics['kept_step']})")
            if self.logger:
                summary = {k: v for k, v in final.items() if k.startswith("final/")}
                if "data_wait_frac_median" in last_metrics:
                    summary["data_wait_frac_median"] = last_metrics["data_wait_frac_median"]
                self.logger.log(summary, step=self.step)
            self._progress("done", last_metrics, started)


def _train_loop_per_worker(conf: dict[str, Any]) -> None:
    _Worker(conf).run()


# ---------------------------------------------------------------------------------------------------- driver
