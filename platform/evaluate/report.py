"""The study report: every table and figure of the paper from the runs of one MLflow experiment.

``write_report(experiment)`` reads the runs (:mod:`arfm.evaluate.runs`), writes ``report.md`` and PNG plots
(matplotlib, Agg) to ``out`` and logs them as artifacts of a new run tagged ``job=report``. Counterparts:

- table 2: paradigm x frame rate (text conditioning, the main duration and batch size);
- table 3: temporally aligned controls, all controls and one at a time (``single_<control>`` variants);
- table 4: inpainting (AR fill-in-the-middle, FM supervised, FM zero-shot = ``inpaint_zs`` variant);
- table 5: the human ratings of a listening study (:mod:`arfm.evaluate.report_listening`);
- table 7 / figure 4: FM (EnCodec) frame rate x duration;
- table 8 / figure 3: FM at fixed Euler step counts (``euler<N>`` variants);
- figure 8: batch size x duration at a fixed number of updates;
- figure 9: AR first-codebook entropy per sampling step;
- appendix B: codec reconstruction (SI-SNR, ViSQOL, log-MSD);
- appendix D: the sampling searches, one table per search (:mod:`arfm.evaluate.report_tune`).

Each row gives n (evaluated samples) and each value its 95% interval when the run logged
``eval/per_sample.json``: ``± h`` for the symmetric t interval of a per-sample mean, ``[lo, hi]`` for an
interval that is not symmetric (FAD: the basic bootstrap over the clips of both sets, named in the cell).
Every value cell names what produced it: the estimator and its reference for the adherence metrics
(``chordino vs labels, tetrads``), the embedding for FAD, the model for CLAP and aesthetics; a fallback
estimator gets a numbered note saying why. Grid cells of the paper's design (and any other cell seen) without
a run say "not run"; a run without evaluation says "not evaluated"; a metric the evaluation could not compute
says "skipped [k]" with the reason below the tables (``mel-offline`` is not the paper's VGGish).
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from arfm.evaluate import report_baselines
from arfm.evaluate.plots import plot_entropy, plot_f8, plot_steps, plot_t7, plot_table2
from arfm.evaluate.report_listening import listening_section
from arfm.evaluate.job import INPAINT_SPAN_FRAC
from arfm.evaluate.results import METRICS
from arfm.evaluate.runs import ReportError, RunView, Stat, collect_runs, latest
from arfm.evaluate.report_tune import is_search, search_section
from arfm.evaluate.sound import sound_section
from arfm.evaluate.stats import SET_BOOTSTRAP, T_INTERVAL, describe

PAPER_FRAME_RATES = (25, 50, 100)
MODELS = ("AR", "FM (EnC)", "FM (VAE)")
PAPER_EULER = (10, 25, 50, 200)
PAPER_T7 = ((25, 10.0), (25, 20.0), (25, 40.0), (50, 10.0), (50, 20.0), (50, 40.0), (100, 10.0))
PAPER_BATCHES = (8, 16, 32, 64, 128, 256)
PAPER_F8_DURATIONS = (10.0, 30.0)
SINGLE = (("chords", "single_chords"), ("drums", "single_drums"), ("melody", "single_melody"))
NOT_RUN = "not run"

__all__ = ["ReportError", "Report", "build_report", "write_report"]


@dataclass
class Report:
    path: Path
    markdown: str
    figures: list[Path]
    run_id: str | None


class _Notes:
    """Numbered skip reasons shown under the tables."""

    def __init__(self):
        self.items: list[str] = []

    def ref(self, reason: str) -> int:
        if reason not in self.items:
            self.items.append(reason)
        return self.items.index(reason) + 1


class _Ctx:
    def __init__(self, notes: _Notes):
        self.notes = notes

    def cell(self, stat: Stat, metric: str) -> str:
        """``value interval (method)``: the interval as its method computed it (``± h`` only when symmetric,
        else ``[lo, hi]``), the estimator / embedding / reference that produced the value, the interval's method
        when it is not the t interval, and a numbered note when a fallback estimator was used."""
        digits = METRICS.get(metric, ("", True, 3))[2]
        s = stat.summary
        if s is not None and s.mean is not None:
            text = f"{s.mean:.{digits}f}"
            ci = s.interval_text(digits)
            label = stat.method or "method not recorded"
            if ci:
                text += f" {ci}"
                if s.method != T_INTERVAL:
                    label += f"; {s.method}"
            else:
                label += "; no interval"
            text += f" ({label})"
            if stat.fallback:
                text += f" [{self.notes.ref(stat.fallback)}]"
            return text
        if stat.skipped:
            return f"skipped [{self.notes.ref(stat.skipped)}]"
        return "—"


def _md_table(headers: list[str], rows: list[list[str]]) -> str:
    """A markdown table (pandas ``to_markdown``, through tabulate); cells are shown as written."""
    import pandas as pd

    return pd.DataFrame([[str(c) for c in r] for r in rows], columns=headers).to_markdown(index=False,
                                                                                      disable_numparse=True)


def _n(stats: Iterable[Stat]) -> str:
    ns = [s.summary.n for s in stats if s.summary is not None and s.summary.mean is not None and s.summary.n]
    return str(max(ns)) if ns else "—"


def _fad_label(runs: Iterable[RunView], keys: Iterable[str] = ("fad",), title: str = "FAD↓") -> str:
    """FAD column header, naming the embedding when every run used the same one (each cell names it too)."""
    models = set()
    for r in runs:
        for k in keys:
            st = r.stat(k)
            if st.summary is not None and st.method:
                models.add(st.method)
    return f"{title} [{models.pop()}]" if len(models) == 1 else title


def _with_fad2(metrics: list[str], runs: Iterable[RunView], prefixes: Iterable[str] = ("",)) -> list[str]:
    """``metrics`` with the second FAD embedding's column after FAD when any run has it."""
    runs, prefixes = list(runs), list(prefixes)
    if any(r.stat(p + "fad2").summary is not None for r in runs for p in prefixes):
        i = metrics.index("fad") + 1
        return metrics[:i] + ["fad2"] + metrics[i:]
    return metrics


def _base_rows(ctx: "_Ctx", base: list[RunView], table: str, metrics: list[str], lead, frame_rate=None):
    """The table's ceiling and floor rows; ``lead(label)`` gives the leading cells of a row."""
    return [lead(label) + _metric_row(ctx, r, metrics, prefix)
            for label, r, prefix in report_baselines.rows(base, table, frame_rate)]


def _run_ref(r: RunView) -> str:
    return f"`{r.run_id[:8]}` {r.study_cell or r.name}"


def _metric_row(ctx: _Ctx, r: RunView | None, metrics: list[str], prefix: str = "") -> list[str]:
    """``[n, values..., run]`` for one run (``not run`` / ``not evaluated`` rows keep the width)."""
    if r is None:
        return [NOT_RUN] + [""] * len(metrics) + [""]
    if not r.evaluated:
        return ["not evaluated"] + [""] * len(metrics) + [_run_ref(r)]
    stats = [r.stat(prefix + m) for m in metrics]
    cells = [ctx.cell(s, m) for s, m in zip(stats, metrics)]
    return [_n(stats)] + cells + [_run_ref(r)]


def _headers(metrics: list[str], fad_header: str, fad2_header: str = "FAD₂↓") -> list[str]:
    return [fad_header if m == "fad" else fad2_header if m == "fad2" else METRICS[m][0] for m in metrics]


def _models(runs: list[RunView]) -> list[str]:
    seen = [r.model_label for r in runs]
    return list(MODELS) + sorted({m for m in seen if m not in MODELS})


def _pick(runs: list[RunView], **want: Any) -> RunView | None:
    return latest([r for r in runs if all(getattr(r, k) == v for k, v in want.items())])


def _main_setting(text_runs: list[RunView]) -> tuple[float | None, int | None]:
    """The study's main (duration, batch): the largest batch, then the shortest duration at that batch."""
    batches = [r.batch_size for r in text_runs if r.batch_size is not None]
    if not batches:
        return None, None
    b = max(batches)
    durs = [r.duration for r in text_runs if r.batch_size == b and r.duration is not None]
    return (min(durs) if durs else None), b


def _is_main(r: RunView, main: tuple[float | None, int | None]) -> bool:
    d, b = main
    return (d is None or r.duration in (None, d)) and (b is None or r.batch_size in (None, b))


# ------------------------------------------------------------------------------------------------ tables


def table2(ctx: _Ctx, gen: list[RunView], main, base: list[RunView] = ()) -> tuple[str, list[tuple]]:
    runs = [r for r in gen if r.conditioning == "text" and _is_main(r, main)]
    metrics = _with_fad2(["fad", "clap", "pq", "pc", "ce", "chord_iou", "beat_f1", "melody_sim"], [*runs, *base])
    fad_h, fad2_h = _fad_label([*runs, *base]), _fad_label([*runs, *base], ["fad2"], "FAD₂↓")
    frs = sorted(set(PAPER_FRAME_RATES) | {r.frame_rate for r in runs if r.frame_rate})
    rows, picked = [], []
    for fr in frs:
        for model in _models(runs):
            r = _pick(runs, frame_rate=fr, model_label=model)
            rows.append([str(fr), model] + _metric_row(ctx, r, metrics))
            picked.append((fr, model, r))
        rows += _base_rows(ctx, list(base), "2", metrics, lambda label, fr=fr: [str(fr), label], fr)
    d, b = main
    setting = f"duration {d:g} s, batch {b}" if d is not None and b is not None else "all text-conditioned runs"
    text = (f"## Table 2 — paradigm × frame rate (text conditioning; {setting})\n\n"
            + _md_table(["Hz", "Model", "n"] + _headers(metrics, fad_h, fad2_h) + ["run"], rows))
    return text, picked


def table3(ctx: _Ctx, gen: list[RunView], baselines: list[RunView] = ()) -> str:
    runs = [r for r in gen if r.conditioning == "controls"]
    fad_h = _fad_label(runs, ["fad"] + [f"{v}/fad" for _, v in SINGLE])
    heads = ["Model", "Conditioning", "n", fad_h, METRICS["clap"][0], METRICS["chord_iou"][0], METRICS["beat_f1"][0],
             METRICS["melody_sim"][0], "run"]
    rows = []
    for label, par in (("AR", "ar"), ("FM", "fm")):
        rows.append([label, "All"] + _metric_row(ctx, _pick(runs, paradigm=par),
                                                 ["fad", "clap", "chord_iou", "beat_f1", "melody_sim"]))
    for label, par in (("AR", "ar"), ("FM", "fm")):
        cands = [x for x in runs if x.paradigm == par]
        r = latest([x for x in cands if x.variants("single_")])
        if r is None:
            base = latest(cands)
            rows.append([label, "Single", NOT_RUN if base is None else "not evaluated"] + [""] * 5
                        + [_run_ref(base) if base else ""])
            continue
        fad = [r.stat(f"{v}/fad") for _, v in SINGLE]
        clap = [r.stat(f"{v}/clap") for _, v in SINGLE]
        own = [r.stat("single_chords/chord_iou"), r.stat("single_drums/beat_f1"), r.stat("single_melody/melody_sim")]
        rows.append([label, "Single (chords / drums / melody)", _n(fad + clap + own),
                     " / ".join(ctx.cell(s, "fad") for s in fad), " / ".join(ctx.cell(s, "clap") for s in clap),
                     ctx.cell(own[0], "chord_iou"), ctx.cell(own[1], "beat_f1"), ctx.cell(own[2], "melody_sim"),
                     _run_ref(r)])
    frs = {r.frame_rate for r in runs if r.frame_rate}
    rows += _base_rows(ctx, list(baselines), "3", ["fad", "clap", "chord_iou", "beat_f1", "melody_sim"],
                       lambda label: [label, "All" if "untrained" in label else "—"],
                       next(iter(frs)) if len(frs) == 1 else None)
    return ("## Table 3 — temporally aligned controls\n\n'Single' rows: one control given, the others null; FAD "
            "and CLAP for chords / drums / melody, each adherence metric from its own control.\n\n"
            + _md_table(heads, rows))


def table4(ctx: _Ctx, gen: list[RunView], base: list[RunView] = ()) -> str:
    metrics = ["fad", "clap", "pq", "pc", "ce"]
    inp = [r for r in gen if r.conditioning == "inpainting"]
    zs = [r for r in gen if r.paradigm == "fm" and r.variants("inpaint_zs")]
    fad_h = _fad_label(inp + zs, ["fad", "inpaint/fad", "inpaint_zs/fad"])
    ar, fm = _pick(inp, paradigm="ar"), _pick(inp, paradigm="fm")
    rows = [["AR (fill-in-the-middle)"] + _metric_row(ctx, ar, metrics, _inpaint_prefix(ar)),
            ["FM (supervised)"] + _metric_row(ctx, fm, metrics, _inpaint_prefix(fm)),
            ["FM (zero-shot)"] + _metric_row(ctx, latest(zs), metrics, "inpaint_zs/")]
    frs = {r.frame_rate for r in inp + zs if r.frame_rate}
    rows += _base_rows(ctx, list(base), "4", metrics, lambda label: [label], next(iter(frs)) if len(frs) == 1 else None)
    return (f"## Table 4 — inpainting (the middle {INPAINT_SPAN_FRAC:.0%} of each clip masked)\n\n"
            + _md_table(["Model", "n"] + _headers(metrics, fad_h) + ["run"], rows))


def _inpaint_prefix(r: RunView | None) -> str:
    """Inpainting models are evaluated under the variant ``inpaint`` (``eval/inpaint/<metric>``) or plainly."""
    return "inpaint/" if r is not None and r.variants("inpaint") - {"inpaint_zs"} else ""


def table7(ctx: _Ctx, gen: list[RunView], main) -> tuple[str, dict]:
    metrics = ["fad", "clap", "pq", "ce"]
    b = main[1]
    runs = [r for r in gen if r.conditioning == "text" and r.model_label == "FM (EnC)"
            and (b is None or r.batch_size in (None, b))]
    fad_h = _fad_label(runs)
    keys = sorted(set(PAPER_T7) | {(r.frame_rate, r.duration) for r in runs if r.frame_rate and r.duration})
    rows, data = [], {}
    for fr, d in keys:
        r = _pick(runs, frame_rate=fr, duration=d)
        rows.append([str(fr), f"{d:g}"] + _metric_row(ctx, r, metrics))
        if r is not None and r.evaluated:
            data[(fr, d)] = r.stat("fad")
    return ("## Table 7 — FM (EnCodec) frame rate × duration\n\n"
            + _md_table(["Hz", "Dur (s)", "n"] + _headers(metrics, fad_h) + ["run"], rows)), data


def table8(ctx: _Ctx, gen: list[RunView], main, base: list[RunView] = ()) -> tuple[str, dict]:
    runs = [r for r in gen if r.conditioning == "text" and r.model_label == "FM (EnC)" and _is_main(r, main)]
    prefixes = [""] + [f"{v}/" for r in runs for p in ("euler", "midpoint", "heun", "dopri5", "nfe")
                       for v in r.variants(p)]
    metrics = _with_fad2(["fad", "clap", "pq", "pc", "ce"], runs, prefixes)
    fad_h = _fad_label(runs, [f"{p}fad" for p in prefixes])
    fad2_h = _fad_label(runs, [f"{p}fad2" for p in prefixes], "FAD₂↓")
    frs = sorted(set(PAPER_FRAME_RATES) | {r.frame_rate for r in runs if r.frame_rate})
    rows, data = [], {}
    for fr in frs:
        r = _pick(runs, frame_rate=fr)
        seen = sorted(int(v[5:]) for v in (r.variants("euler") if r else set()) if v[5:].isdigit())
        wanted = _configured_steps(r) or list(PAPER_EULER)
        for steps in sorted(set(wanted) | set(seen)):
            has = r is not None and steps in seen
            row = _metric_row(ctx, r if has else None, metrics, f"euler{steps}/")
            rows.append([str(fr), str(steps)] + row)
            if has:
                data.setdefault(fr, {})[steps] = {m: r.stat(f"euler{steps}/{m}") for m in metrics}
            rows += [[str(fr), label] + _metric_row(ctx, r, metrics, f"{v}/") for v, label in _few_step(r, steps)]
        if r is not None:
            for extra in ("midpoint", "heun", "dopri5"):
                if r.variants(extra):
                    rows.append([str(fr), extra] + _metric_row(ctx, r, metrics, f"{extra}/"))
            solver = _eval_setting(r, "sample.solver")
            steps = _eval_setting(r, "sample.steps") if solver in ("euler", "midpoint", "heun") else None
            label = f"{solver}{' ' + steps if steps else ''} (run default)" if solver else "run default"
            rows.append([str(fr), label] + _metric_row(ctx, r, metrics))
            rows += _base_rows(ctx, list(base), "8", metrics, lambda label, fr=fr: [str(fr), label], fr)
    return ("## Table 8 / figure 3 — FM (EnCodec) with a fixed number of Euler steps; midpoint and Heun at the "
            "same number of function evaluations (NFE), and Euler on a time-shifted grid\n\n"
            + _md_table(["Hz", "Steps", "n"] + _headers(metrics, fad_h, fad2_h) + ["run"], rows)), data


def _few_step(r: RunView | None, nfe: int) -> list[tuple[str, str]]:
    """(variant, row label) of the few-step rows at ``nfe`` evaluations: midpoint / Heun at nfe/2 steps, then
    Euler on the time-shifted grid."""
    if r is None:
        return []
    found = r.variants(f"nfe{nfe}_")
    rows = [(f"nfe{nfe}_{s}", f"{s} {nfe // 2} (NFE {nfe})") for s in ("midpoint", "heun")
            if f"nfe{nfe}_{s}" in found]
    if f"nfe{nfe}_shift" in found:
        shift = _eval_setting(r, "eval.shifted_euler")
        shown = f" ×{shift}" if shift not in (None, "None", "") else ""
        rows.append((f"nfe{nfe}_shift", f"{nfe} shifted{shown} (NFE {nfe})"))
    return rows


def _eval_setting(r: RunView, key: str) -> str | None:
    """A setting the evaluation sampled with (its ``eval/<key>`` tag), else the run's training param."""
    return r.tags.get(f"eval/{key}") or r.params.get(key)


def _configured_steps(r: RunView | None) -> list[int]:
    if r is None:
        return []
    raw = r.params.get("eval.euler_steps", "")
    try:
        import json

        return [int(x) for x in json.loads(raw)]
    except (ValueError, TypeError):
        return []


def figure8_table(ctx: _Ctx, gen: list[RunView], main) -> tuple[str, dict]:
    metrics = ["fad", "clap", "pq", "ce"]
    text = [r for r in gen if r.conditioning == "text" and r.paradigm in ("ar", "fm") and r.model_label != "FM (VAE)"]
    frs = {r.frame_rate for r in text}
    fr = 50 if 50 in frs else (min(frs, key=lambda f: abs((f or 0) - 50)) if frs else 50)
    runs = [r for r in text if r.frame_rate == fr]
    fad_h = _fad_label(runs)
    models = sorted({r.model_label for r in runs} | {"AR", "FM (EnC)"})
    durs = sorted(set(PAPER_F8_DURATIONS) | {r.duration for r in runs if r.duration})
    batches = sorted(set(PAPER_BATCHES) | {r.batch_size for r in runs if r.batch_size})
    rows, data = [], {}
    for model in models:
        for d in durs:
            for b in batches:
                r = _pick(runs, model_label=model, duration=d, batch_size=b)
                rows.append([model, f"{d:g}", str(b)] + _metric_row(ctx, r, metrics))
                if r is not None and r.evaluated:
                    data.setdefault((model, d), {})[b] = {m: r.stat(m) for m in metrics}
    return (f"## Figure 8 — batch size × duration ({fr} Hz, text conditioning)\n\n"
            + _md_table(["Model", "Dur (s)", "Batch", "n"] + _headers(metrics, fad_h) + ["run"], rows)), data


def appendix_b(ctx: _Ctx, runs: list[RunView]) -> str:
    codec = [r for r in runs if r.paradigm == "codec" or r.job == "codec"]
    frs = sorted(set(PAPER_FRAME_RATES) | {r.frame_rate for r in codec if r.frame_rate})
    rows = []
    for fr in frs:
        for latent, label in (("vae", "VAE"), ("encodec", "EnCodec")):
            r = _pick(codec, frame_rate=fr, latent=latent)
            if r is None:
                rows.append([str(fr), label, NOT_RUN, "", "", "", "", "", ""])
                continue
            s = [_recon(r, "si_snr", "latent"), r.stat("visqol"), _recon(r, "log_msd", "latent"),
                 _recon(r, "si_snr", "tokens"), _recon(r, "log_msd", "tokens")]
            names = ["si_snr", "visqol", "log_msd", "si_snr", "log_msd"]
            rows.append([str(fr), label, _n(s)] + [ctx.cell(x, m) for x, m in zip(s, names)] + [_run_ref(r)])
    return ("## Appendix B — codec reconstruction\n\nContinuous (pre-quantizer) latent path as in the paper; the "
            "RVQ columns decode the AR tokens.\n\n"
            + _md_table(["Hz", "Latent", "n", "SI-SNR↑", "ViSQOL↑", "log-MSD↓", "SI-SNR↑ (RVQ)", "log-MSD↓ (RVQ)",
                         "run"], rows))


_RECON_METHODS = {"si_snr": "si-snr", "log_msd": "log-mel L1"}


def _recon(r: RunView, name: str, path: str) -> Stat:
    from arfm.evaluate.stats import Summary

    st = r.stat(name if path == "latent" else f"rvq/{name}")
    if st.summary is not None or st.skipped:
        return st
    n = int(next((v for k, v in r.metrics.items() if k.endswith("recon_n_clips")), 0) or 0)
    for k, v in r.metrics.items():  # the codec task logs recon_<name>_<path> over recon_n_clips valid clips
        if k.endswith(f"{name}_{path}"):
            return Stat(Summary(v, None, None, n, method="none"), method=_RECON_METHODS[name])
    return Stat()


def figure9(gen: list[RunView]) -> tuple[str, dict]:
    from arfm.evaluate.entropy import entropy_curve

    curves = {}
    for r in gen:
        if r.paradigm != "ar" or not r.per_sample or not r.per_sample.get("entropy"):
            continue
        for variant, rows in r.per_sample["entropy"].items():
            if not rows:
                continue
            label = r.conditioning + (f" / {variant}" if variant else "") + f" ({r.study_cell or r.run_id[:8]})"
            curves[label] = entropy_curve(rows)
    if not curves:
        return ("## Figure 9 — AR first-codebook entropy per step\n\nnot run (no AR evaluation logged per-step "
                "entropies)"), {}
    rows = []
    for label, c in curves.items():
        early, late = c.mean[:50], c.mean[50:]
        rows.append([label, str(int(c.n.max())), str(len(c.mean)), f"{early.mean():.3f}",
                     f"{late.mean():.3f}" if late.size else "—"])
    return ("## Figure 9 — AR first-codebook entropy per step (nats)\n\n"
            + _md_table(["Curve", "prompts", "steps", "mean H, steps < 50", "mean H, steps ≥ 50"], rows)), curves


# ------------------------------------------------------------------------------------------------ driver


def build_report(runs: list[RunView], out: Path, experiment: str, uri: str = "") -> tuple[str, list[Path]]:
    """Markdown text and PNG paths for ``runs`` (written under ``out``)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    notes = _Notes()
    ctx = _Ctx(notes)
    searches = search_section(runs, uri)
    runs = [r for r in runs if not is_search(r) or r.job == "tune"]  # a search's trials are in its table
    gen = [r for r in runs if r.paradigm in ("ar", "fm") and r.job not in ("baseline", "tune")]
    base = [r for r in runs if r.job == "baseline" and r.evaluated]
    main = _main_setting([r for r in gen if r.conditioning == "text"])
    t2, picked = table2(ctx, gen, main, base)
    t7, d7 = table7(ctx, gen, main)
    t8, d8 = table8(ctx, gen, main, base)
    f8, d_f8 = figure8_table(ctx, gen, main)
    f9, curves = figure9(gen)
    sound, spec_fig = sound_section(picked, base, out, uri)
    t5, t5_figs = listening_section(uri, experiment, out)
    sections = [t2, table3(ctx, gen, base), table4(ctx, gen, base), t5, t7, t8, f8, f9, appendix_b(ctx, runs), searches,
                sound]
    figs = [p for p in (plot_table2(picked, out), plot_t7(d7, out), plot_steps(d8, out), plot_f8(d_f8, out),
                        plot_entropy(curves, out), spec_fig, *t5_figs) if p is not None]
    fad_models = sorted({r.stat("fad").method for r in gen if r.stat("fad").method})
    head = [f"# arfm study report — experiment `{experiment}`", "",
            f"Generated {_dt.datetime.now().isoformat(timespec='seconds')} from {len(runs)} runs"
            + (f" at `{uri}`" if uri else "") + ".", "",
            "n is the number of evaluated samples. Values are means over them with a 95% interval: `± h` is the "
            f"{describe(T_INTERVAL)}; `[lo, hi]` is an interval that is not symmetric, named in its cell — for FAD "
            f"the {describe(SET_BOOTSTRAP)}, cut at 0. The plug-in FAD is biased upward at small n and that "
            "interval corrects for the bias, so it can lie below the value. Each cell names its estimator, "
            "embedding or model and, for the adherence metrics, the reference (exact labels or reference audio). "
            + ("FAD embedding(s): " + ", ".join(f"`{m}`" for m in fad_models) + ". " if fad_models else "")
            + ("`mel-offline` is a fixed log-mel statistics embedding, not the paper's VGGish: its FAD values are "
               "not comparable with the paper's." if "mel-offline" in fad_models else "")]
    body = "\n\n".join(sections)
    tail = []
    if figs:
        tail += ["## Figures", ""] + [f"![{p.stem}]({p.name})" for p in figs if p.name != "spectrograms.png"]
    if notes.items:
        tail += ["", "## Notes: skipped metrics and fallback estimators", ""]
        tail += [f"[{i}] {t}" for i, t in enumerate(notes.items, 1)]
    run_notes = [f"- {_run_ref(r)}: {t}" for r in runs for t in ((r.per_sample or {}).get("notes") or [])]
    run_notes += [f"- {_run_ref(r)}: {r.extra['per_sample_error']}; its values are shown without intervals"
                  for r in runs if r.extra.get("per_sample_error")]
    if run_notes:
        tail += ["", "## Evaluation notes", ""] + run_notes
    tail += ["", "## Runs", "", _md_table(
        ["run", "name", "study cell", "paradigm", "Hz", "conditioning", "latent", "dur (s)", "batch", "evaluated",
         "status"],
        [[f"`{r.run_id[:8]}`", r.name, r.study_cell, r.paradigm, str(r.frame_rate or ""), r.conditioning, r.latent,
          f"{r.duration:g}" if r.duration else "", str(r.batch_size or ""), "yes" if r.evaluated else "no", r.status]
         for r in runs])]
    text = "\n".join(head) + "\n\n" + body + "\n\n" + "\n".join(tail) + "\n"
    (out / "report.md").write_text(text)
    return text, figs


def _log_report(uri: str, experiment: str, out: Path) -> str:
    from mlflow.tracking import MlflowClient

    from arfm.tracking import git_commit

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    tags = {"job": "report", "paradigm": "", "frame_rate": "", "study_cell": "report", "conditioning": "",
            "latent": "", "preset": "", "git_commit": git_commit()}
    run = client.create_run(exp.experiment_id, run_name=f"report-{experiment}", tags=tags)
    try:
        client.log_artifacts(run.info.run_id, str(out), "report")
        client.set_terminated(run.info.run_id, "FINISHED")
    except Exception:
        client.set_terminated(run.info.run_id, "FAILED")
        raise
    return run.info.run_id


def write_report(experiment: str, out: str | Path | None = None, uri: str | None = None, log: bool = True,
                 progress: Callable[[str], None] | None = None) -> Report:
    """Collect the runs of ``experiment``, write ``out/report.md`` and the PNGs, log them to a report run."""
    from arfm.tracking import home, tracking_uri

    uri = uri or tracking_uri()
    out = Path(out) if out else home() / "reports" / experiment
    say = progress or (lambda _m: None)
    say(f"reading runs of {experiment!r} from {uri}")
    runs = collect_runs(experiment, uri)
    text, figs = build_report(runs, out, experiment, uri)
    run_id = _log_report(uri, experiment, out) if log else None
    return Report(out / "report.md", text, figs, run_id)

