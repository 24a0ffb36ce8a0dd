"""The study pipeline behind ``experiments/grid.py``: one idempotent stage after another.

``data`` (synthesize the default corpus unless the dataset exists) -> ``codec`` (train one codec per frame
rate unless it exists or a pretrained one is given, and one VAE per frame rate some cell trains on, side by side
as Ray tasks) -> ``preprocess`` (Ray Data -> Parquet shards per frame rate and duration, with the VAE latents
beside the EnCodec ones where a cell needs them; resumable) -> ``train`` (every cell as a concurrent Ray task running a Ray Train job; cells
whose MLflow run finished are skipped) -> ``tune`` (the study's sampling searches, :mod:`arfm.tune`, over the
trained models of the cells it names; the best settings become those models' default sampling) ->
``evaluate`` (generate and score every trained cell) -> ``report``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from arfm.config import JobConfig
from arfm.study import Cell, Study, cell_config, codec_config, vae_config

STAGES = ("data", "codec", "preprocess", "train", "tune", "evaluate", "report")


SUMMARY_KEYS = ("loss", "valid_loss", "steps_per_s", "data_wait_frac_median", "stopped", "kept_step")


def task_cfg(cfg: JobConfig, task: str) -> JobConfig:
    """``cfg`` as the trainer runs ``task`` (an autoencoder job maps its own section onto ``train``)."""
    from arfm.train.task import get_task

    t = get_task(task)
    return t.job_config(cfg) if hasattr(t, "job_config") else cfg


def _train_cell(cfg_json: dict[str, Any], task: str, run_name: str) -> dict[str, Any]:
    from arfm.config import JobConfig
    from arfm.train.trainer import run_training

    cfg = JobConfig.model_validate(cfg_json)
    result = run_training(cfg, task, run_name=run_name)
    out = {k: result[k] for k in ("run_id", "final_step", "wall_s") if k in result}
    out.update({k: result["metrics"][k] for k in SUMMARY_KEYS if k in result["metrics"]})
    for path in ("latent", "tokens"):  # an autoencoder's reconstruction on the valid split
        if f"final/recon_si_snr_{path}" in result["metrics"]:
            out[f"si_snr_{path}"] = result["metrics"][f"final/recon_si_snr_{path}"]
    return out


def _one_thread() -> None:
    """Evaluation jobs generate in one thread: their metric tasks take the other CPUs."""
    import torch

    torch.set_num_threads(1)


def _evaluate_cell(cfg_json: dict[str, Any], run_id: str, layer: dict[str, Any]) -> dict[str, Any]:
    _one_thread()
    from arfm.config import JobConfig
    from arfm.evaluate.job import evaluate_run

    out = evaluate_run(JobConfig.model_validate(cfg_json), run_id=run_id, layer=layer)
    return {k: out[k] for k in ("run_id", "n", "notes")}


def _baseline_audio(cfg_json: dict[str, Any], kinds: tuple[str, ...]) -> dict[str, Any]:
    _one_thread()
    from arfm.config import JobConfig
    from arfm.evaluate.baselines import evaluate_audio_baselines

    runs = evaluate_audio_baselines(JobConfig.model_validate(cfg_json), kinds)
    return {"run_id": ", ".join(runs.values())}


def _baseline_untrained(cfg_json: dict[str, Any], tuned_from: str | None, layer: dict[str, Any]) -> dict[str, Any]:
    _one_thread()
    from arfm.config import JobConfig
    from arfm.evaluate.baselines import evaluate_untrained

    return {"run_id": evaluate_untrained(JobConfig.model_validate(cfg_json), tuned_from=tuned_from, layer=layer)}


class StudyRunner:
    def __init__(self, study: Study, root: Path, overrides: list[str] | None = None, console: Any = None,
                 address: str | None = None) -> None:
        from rich.console import Console

        self.study, self.root = study, Path(root)
        self.overrides = list(overrides or [])
        self.console = console or Console()
        self.address = address
        self.timings: dict[str, float] = {}
        self._started: dict[str, float] = {}

    # -- helpers -------------------------------------------------------------------------------------
    def log(self, msg: str) -> None:
        self.console.print(f"[bold cyan]grid[/bold cyan] {msg}", soft_wrap=True)  # one line per message

    def cell_cfg(self, cell: Cell) -> JobConfig:
        return cell_config(self.study, cell, self.root, self.overrides)

    def codec_cfg(self, frame_rate: int) -> JobConfig:
        return codec_config(self.study, frame_rate, self.root, self.overrides)

    def vae_cfg(self, frame_rate: int) -> JobConfig:
        return vae_config(self.study, frame_rate, self.root, self.overrides)

    def _init_ray(self) -> None:
        import ray

        from arfm.raylogs import quiet_ray_data

        # Worker output goes to Ray's log files (``ray logs`` / the dashboard): the grid prints one progress
        # line per job and a summary per stage instead of interleaved raw logs.
        if not ray.is_initialized():
            if self.address:
                ray.init(address=self.address, log_to_driver=False)
            else:
                # Inside `ray job submit` this joins the job's cluster; on a bare machine it starts a local Ray.
                ray.init(include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
        quiet_ray_data()

    def _run_name(self, cell_name: str) -> str:
        import datetime
        import secrets

        return f"{cell_name}-{datetime.datetime.now().strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"

    def _summary(self, title: str, rows: list[dict[str, Any]], columns: list[str]) -> None:
        from rich.table import Table

        table = Table(title=title, title_justify="left")
        for c in columns:
            table.add_column(c, justify="left" if c in ("cell", "stopped") else "right")
        for r in rows:
            table.add_row(*[_fmt(r.get(c)) for c in columns])
        self.console.print(table)

    def sample_layer(self) -> dict[str, Any]:
        """The user's ``--set sample.*`` of this grid run: they win over a searched sampling."""
        from arfm.config import parse_override

        layer: dict[str, Any] = {}
        for item in self.overrides:
            path, value = parse_override(item)
            if path[0] == "sample" and len(path) > 1:
                node = layer.setdefault("sample", {})
                for part in path[1:-1]:
                    node = node.setdefault(part, {})
                node[path[-1]] = value
        return layer

    def _finished(self, cfg: JobConfig, job: str) -> str | None:
        from arfm import tracking

        return tracking.find_finished_run(cfg.tracking.experiment, cfg.study_cell, uri=tracking.tracking_uri(cfg),
                                          job=job)

    # -- stages --------------------------------------------------------------------------------------
    def run(self, stages: list[str]) -> bool:
        unknown = [s for s in stages if s not in STAGES]
        if unknown:
            from arfm.config import ConfigError

            raise ConfigError(f"--stages: unknown stage(s) {unknown}; choose from {', '.join(STAGES)}")
        self.log(f"study [bold]{self.study.name}[/bold]: {len(self.study.cells)} cell(s), home {self.root}")
        self._init_ray()
        ok = True
        for stage in STAGES:
            if stage not in stages:
                continue
            t0 = time.time()
            self.log(f"stage [bold]{stage}[/bold]")
            ok = getattr(self, f"stage_{stage}")() is not False and ok
            self.timings[stage] = time.time() - t0
            self.log(f"stage {stage} done in {self.timings[stage]:.0f} s")
        self._summary("stages", [{"cell": k, "seconds": round(v)} for k, v in self.timings.items()],
                      ["cell", "seconds"])
        return ok

    def stage_data(self) -> None:
        from arfm.data.synth import synthesize_dataset

        cfg = self.codec_cfg(self.study.frame_rates[0])
        manifest = Path(cfg.data.dataset) / "manifest.jsonl"
        if manifest.exists():
            self.log(f"dataset {cfg.data.dataset} exists: reused")
            return
        from tqdm import tqdm

        bar = tqdm(total=cfg.data.synth_clips, desc="synth", unit="clip", disable=None)  # no bar in a log file
        t0 = time.time()
        rows = synthesize_dataset(cfg.data.dataset, n=cfg.data.synth_clips, seconds=cfg.data.synth_seconds,
                                  seed=cfg.data.seed, workers=2, sample_rate=cfg.data.sample_rate,
                                  valid_fraction=cfg.data.valid_fraction,
                                  progress=lambda done, total: bar.update(done - bar.n))
        bar.close()
        splits = {s: sum(1 for r in rows if r.get("split") == s) for s in ("train", "valid")}
        self.log(f"dataset {cfg.data.dataset}: {len(rows)} clips of {cfg.data.synth_seconds:g} s "
                 f"({splits['train']} train, {splits['valid']} valid) in {time.time() - t0:.0f} s")

    def stage_codec(self) -> bool:
        """The autoencoders: one codec per frame rate, and one VAE per frame rate some cell trains on, run side by
        side as Ray tasks (each a Ray Train job holding its own CPUs), like the training cells."""
        from arfm.latents import CODEC_META
        from arfm.vae_latent import VAE_META

        jobs: list[tuple[str, JobConfig, str]] = []
        for fr in self.study.frame_rates:
            cfg = self.codec_cfg(fr)
            if cfg.codec.pretrained:
                self.log(f"codec {fr} Hz: pretrained {cfg.codec.pretrained}")
            elif (Path(cfg.codec.path) / CODEC_META).exists():
                self.log(f"codec {fr} Hz: {cfg.codec.path} exists: reused")
            else:
                jobs.append((cfg.study_cell, cfg, "codec"))
        for fr in self.study.vae_frame_rates:
            cfg = self.vae_cfg(fr)
            if (Path(cfg.vae.path) / VAE_META).exists():
                self.log(f"VAE {fr} Hz: {cfg.vae.path} exists: reused")
            else:
                jobs.append((cfg.study_cell, cfg, "vae"))
        if not jobs:
            return True
        results: list[dict[str, Any]] = []
        ok = self._run_jobs(jobs, results)
        for r in results:
            if r.get("stopped") != "FAILED":
                self.log(f"{r['cell']} trained: run {r.get('run_id')}, {r.get('final_step')} steps, SI-SNR "
                         f"{_fmt(r.get('si_snr_latent'))} dB (latent) / {_fmt(r.get('si_snr_tokens'))} dB (tokens) "
                         "on the valid split")
        return ok

    def stage_preprocess(self) -> None:
        from arfm.data.preprocess import preprocess

        for fr, dur in self.study.shard_keys:
            cells = [c for c in self.study.cells if (c.frame_rate, c.duration) == (fr, dur)]
            cfg = self.cell_cfg(cells[0])
            vae = cfg.vae.path if any(c.representation == "vae" for c in cells) else None
            summary = preprocess(cfg, cfg.data.dataset, cfg.codec.pretrained or cfg.codec.path, cfg.data.shards,
                                 vae=vae)
            self.log(f"shards {fr} Hz / {dur:g} s{' (EnCodec and VAE latents)' if vae else ''}: "
                     f"{summary.get('written')} written, {summary.get('skipped')} reused -> {cfg.data.shards}")

    def max_concurrent(self, cfg: JobConfig, streaming: bool = True) -> int:
        """How many training cells fit side by side.

        Every training job holds ``workers x cpus_per_worker`` CPUs (and GPUs when asked) for its whole run. A job
        that streams its data needs Ray Data read tasks all along: then one CPU stays free for them, or they
        would wait forever for one. Jobs whose data is read into memory before their workers start need none.
        """
        import ray

        total = ray.cluster_resources()
        t = cfg.train
        spare = 1 if streaming else 0
        by_cpu = int((total.get("CPU", 1) - spare) // max(1, t.workers * t.cpus_per_worker))
        limits = [by_cpu]
        if t.use_gpu:
            limits.append(int(total.get("GPU", 0) // t.workers))
        return max(1, min(limits))

    def stage_train(self) -> bool:
        todo: list[Cell] = []
        for cell in self.study.cells:
            done = self._finished(self.cell_cfg(cell), "train")
            if done:
                self.log(f"{cell.name}: finished run {done} reused")
            else:
                todo.append(cell)
        ok = True
        for wave in self.study.train_waves(todo):  # fine-tuned cells after the cells they start from
            ok = self._train_wave(wave) and ok
        return ok

    def _fine_tune_cfg(self, cell: Cell) -> JobConfig | None:
        """The cell's config; a fine-tuned cell (the study's ``init_from``) starts from its source cell's model."""
        src = self.study.source_cell(cell)
        if src is None:
            return self.cell_cfg(cell)
        run_id = self._finished(self.cell_cfg(src), "train")
        if not run_id:
            self.log(f"[red]{cell.name}: not trained: it fine-tunes from {src.name}, which has no finished "
                     "run[/red]")
            return None
        self.log(f"{cell.name}: fine-tunes from {src.name} (run {run_id})")
        return cell_config(self.study, cell, self.root, [f"train.init_from=runs:/{run_id}/model", *self.overrides])

    def _train_wave(self, cells: list[Cell]) -> bool:
        todo: list[tuple[str, JobConfig, str]] = []
        for cell in cells:
            cfg = self._fine_tune_cfg(cell)
            if cfg is not None:
                todo.append((cell.name, cfg, cfg.model.paradigm))
        complete = len(todo) == len(cells)
        if not todo:
            return complete
        results: list[dict[str, Any]] = []
        ok = self._run_jobs(todo, results)
        self._summary("training", results, ["cell", "final_step", "loss", "valid_loss", "kept_step", "steps_per_s",
                                            "data_wait_frac_median", "stopped", "wall_s"])
        return ok and complete

    def _run_jobs(self, todo: list[tuple[str, JobConfig, str]], results: list[dict[str, Any]]) -> bool:
        """Training jobs ``(name, config, task)`` as Ray tasks, as many at a time as the cluster's CPUs allow, with
        one progress line per running job."""
        import ray

        from arfm import tracking
        from arfm.train.progress import Watcher

        from arfm.train import data as train_data
        from arfm.train.task import get_task

        try:
            streaming = any(train_data.plan(task_cfg(cfg, task), get_task(task)).mode != train_data.MEMORY
                            for _, cfg, task in todo)
        except (OSError, ValueError):  # no shard metadata yet: the job will say so; plan for streaming
            streaming = True
        limit = min(self.max_concurrent(task_cfg(cfg, task), streaming) for _, cfg, task in todo)
        self.log(f"{len(todo)} job(s) to train, {limit} at a time")
        for _, cfg, _ in todo:  # the store and experiment exist before jobs start side by side (a fresh SQLite
            tracking.get_or_create_experiment(cfg.tracking.experiment, tracking.tracking_uri(cfg))  # store races)
        # num_cpus=0: the task only drives a Ray Train job, whose workers ask for their own resources.
        remote = ray.remote(num_cpus=0, max_retries=0)(_train_cell)
        storage = tracking.home() / "ray_results"
        items, run_dirs = [], {}
        for cell_name, cfg, task in todo:
            name = self._run_name(cell_name)
            run_dirs[cell_name] = storage / name
            items.append((cell_name, remote, (cfg.model_dump(mode="json"), task, name)))
        width = max(len(name) for name, _, _ in todo)
        with Watcher(lambda line: self.log(line), interval=15.0, width=width) as watcher:
            return self._run_limited(items, limit, "trained", results,
                                     started=lambda name: watcher.add(name, run_dirs[name]),
                                     finished=lambda name: watcher.remove(name))

    def _run_limited(self, items: list[tuple[str, Any, tuple]], limit: int, verb: str,
                     results: list[dict[str, Any]] | None = None, started=None, finished=None) -> bool:
        """Run ``(name, remote function, args)`` items as Ray tasks, ``limit`` at a time."""
        pending: dict[Any, str] = {}
        ok = True
        items = list(items)
        while items or pending:
            while items and len(pending) < limit:
                name, remote, args = items.pop(0)
                pending[remote.remote(*args)] = name
                self._started[name] = time.time()
                self.log(f"{name}: started")
                if started:
                    started(name)
            ok = self._wait(pending, verb, results, finished) and ok
        return ok

    def stage_tune(self) -> bool:
        """The study's sampling searches (``search`` in the matrix): one per cell it names whose training run
        finished and whose model carries no searched sampling yet; an interrupted one is resumed. Each runs
        Ray Tune in this driver, one trial at a time on a 2-CPU machine (:func:`arfm.tune.search.run_search`)."""
        from arfm import tracking
        from arfm.tune.search import run_search, search_path
        from arfm.tune.space import spec_from_dict

        spaces = self.study.search.get("spaces") or {}
        wanted = self.study.search.get("cells") or []
        cells = [c for c in self.study.cells if c.paradigm in spaces
                 and (not wanted or c.group in wanted or c.name in wanted)]
        if not cells:
            self.log("no sampling search in this study")
            return True
        ok = True
        for cell in cells:
            cfg = self.cell_cfg(cell)
            uri = tracking.tracking_uri(cfg)
            run_id = self._finished(cfg, "train")
            if not run_id:
                self.log(f"[yellow]{cell.name}: no finished training run, not searched[/yellow]")
                continue
            tuned = tracking.tuned_sampling(run_id, uri)
            if tuned:
                self.log(f"{cell.name}: sampling already searched ({tuned['from']})")
                continue
            spec = spec_from_dict(spaces[cell.paradigm])
            name = f"{cell.name}-{spec.name}-{run_id[:8]}"
            t0 = time.time()
            try:
                res = run_search(run_id, spec, layer={"sample": cfg.sample.model_dump(), "eval": cfg.eval.model_dump()},
                                 tracking_uri=uri, name=name, resume=search_path(name).exists(),
                                 study_cell=f"tune-{cell.name}", prefix="grid ", say=self.log)
            except Exception as exc:  # noqa: BLE001 - a failed search leaves the run's own sampling; the others go on
                self.log(f"[red]{cell.name}: search failed: {type(exc).__name__}: {str(exc)[:500]}[/red]")
                ok = False
                continue
            best = res.best
            self.log(f"[green]{cell.name}: searched[/green] ({len(res.trials)} trials, {time.time() - t0:.0f} s): "
                     + (f"best {best['sample']}, objective {best['objective']:.4g}" if best else "[red]no best[/red]"))
            ok = ok and best is not None
        return ok

    def stage_evaluate(self) -> bool:
        """Every trained cell, and the ceiling and floor rows beside them (:mod:`arfm.evaluate.baselines`):
        the reference clips and the codec's reconstructions once per frame rate and duration, an untrained
        twin of every cell. What finished before is skipped."""
        import ray

        from arfm import tracking
        from arfm.evaluate import baselines

        todo: list[tuple[str, Any, tuple]] = []
        evaluate = ray.remote(num_cpus=0, max_retries=0)(_evaluate_cell)
        audio = ray.remote(num_cpus=0, max_retries=0)(_baseline_audio)
        untrained = ray.remote(num_cpus=0, max_retries=0)(_baseline_untrained)
        seen_keys = set()
        layer = self.sample_layer()
        for cell in self.study.cells:
            cfg = self.cell_cfg(cell)
            key = (cell.frame_rate, cell.duration)
            if key not in seen_keys:
                seen_keys.add(key)
                with_vae = any(c.representation == "vae" and (c.frame_rate, c.duration) == key
                               for c in self.study.cells)
                kinds = (*baselines.AUDIO_KINDS, *((baselines.VAE_KIND,) if with_vae else ()))
                missing = [k for k in kinds
                           if not self._finished(cfg.model_copy(update={"study_cell": baselines.audio_cell(cfg, k)}),
                                                 "baseline")]
                if missing:
                    todo.append((f"reference+codec {cell.frame_rate}hz-{cell.duration:g}s", audio,
                                 (cfg.model_dump(mode="json"), tuple(missing))))
            run_id = self._finished(cfg, "train")
            if not run_id:
                self.log(f"[yellow]{cell.name}: no finished training run, not evaluated[/yellow]")
            elif tracking.client(tracking.tracking_uri(cfg)).get_run(run_id).data.tags.get("evaluated") == "true":
                self.log(f"{cell.name}: already evaluated")
            else:
                todo.append((cell.name, evaluate, (cfg.model_dump(mode="json"), run_id, layer)))
            floor = cfg.model_copy(update={"study_cell": baselines.untrained_cell(cfg)})
            if not self._finished(floor, "baseline"):  # sampled like its trained twin (searched sampling too)
                todo.append((baselines.untrained_cell(cfg), untrained, (cfg.model_dump(mode="json"), run_id, layer)))
        if not todo:
            return True
        # A job generates (one thread), then waits on its metric tasks (one CPU each): it holds no CPU itself,
        # so one job more than CPUs keeps every CPU busy while jobs generate and others' metrics run. The jobs
        # with the most sampling variants start first, so the longest does not start last (stable otherwise).
        limit = max(1, int(ray.cluster_resources().get("CPU", 1)) + 1)
        todo.sort(key=lambda item: -_eval_cost(item))
        return self._run_limited(todo, limit, "evaluated")

    def stage_report(self) -> None:
        from arfm import tracking
        from arfm.evaluate.report import write_report

        cfg = self.cell_cfg(self.study.cells[0])
        out = self.root / "reports" / self.study.experiment
        rep = write_report(cfg.tracking.experiment, out=out, uri=tracking.tracking_uri(cfg), log=True)
        self.log(f"report written: {rep.path} ({len(rep.figures)} figures)")

    def _wait(self, pending: dict, verb: str, results: list[dict[str, Any]] | None = None, finished=None) -> bool:
        """Wait for one of ``pending`` to end; log it and add its result row to ``results``."""
        import ray

        ready, _ = ray.wait(list(pending), num_returns=1)
        name = pending.pop(ready[0])
        if finished:
            finished(name)
        try:
            result = ray.get(ready[0])
        except Exception as exc:  # a failed cell keeps its checkpoints; the others go on
            self.log(f"[red]{name}: failed: {type(exc).__name__}: {str(exc)[:500]}[/red]")
            if results is not None:
                results.append({"cell": name, "stopped": "FAILED"})
            return False
        self.log(f"[green]{name}: {verb}[/green] (run {result.get('run_id', '?')}, {time.time() - self._started[name]:.0f} s)")
        if results is not None:
            results.append({"cell": name, **result})
        return True


def _eval_cost(item: tuple[str, Any, tuple]) -> int:
    """About how many sampling variants an evaluation job runs (its trained model's: the floors and the
    reference rows run the default sampling only): FM text models add table 8's solver rows, control models one
    row per control."""
    name, _, args = item
    if name.startswith(("baseline-", "reference+")):
        return 1
    cfg = JobConfig.model_validate(args[0])
    m, e = cfg.model, cfg.eval
    if m.inpainting != "none":
        return 1
    if m.controls:
        return 1 + len(m.controls)
    if m.paradigm != "fm":
        return 1
    few = len(e.few_step_nfe if e.few_step_nfe is not None else e.euler_steps)
    return 1 + len(e.euler_steps) + len(e.extra_solvers) + few * (len(e.equal_nfe_solvers) + bool(e.shifted_euler))


def _fmt(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)
