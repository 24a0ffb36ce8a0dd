"""PNG figures of the report (matplotlib, Agg backend): values with their 95% intervals drawn from lo to hi."""

from __future__ import annotations

from pathlib import Path

from arfm.evaluate.results import METRICS


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _errbar(ax, xs, stats, label, line: bool = True):
    import numpy as np

    pts = [(x, s.summary) for x, s in zip(xs, stats) if s.summary is not None and s.summary.mean is not None]
    if not pts:
        return
    x = [p[0] for p in pts]
    y = np.array([p[1].mean for p in pts])
    # the interval as computed, drawn from lo to hi: a bootstrap interval need not be symmetric about the value,
    # nor contain it (FAD's basic interval corrects an upward bias), so it is not drawn as value ± error
    line_art = ax.plot(x, y, marker="o", label=label, linestyle="-" if line else "none")[0]
    with_ci = [(xi, p[1].lo, p[1].hi) for xi, p in zip(x, pts) if p[1].lo is not None and p[1].hi is not None]
    if with_ci:
        xs, lo, hi = (list(v) for v in zip(*with_ci))
        ax.vlines(xs, lo, hi, color=line_art.get_color())
        ax.plot(xs + xs, lo + hi, linestyle="none", marker="_", markersize=8, color=line_art.get_color())


def _legend(ax) -> None:
    """A legend when the axis has labelled series (a metric skipped everywhere leaves an empty axis)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _plt().close(fig)
    return path


def plot_table2(picked, out: Path) -> Path | None:
    """Table 2 as grouped error bars: frame rates on a categorical axis, one offset series per model."""
    metrics = ["fad", "clap", "chord_iou", "beat_f1", "melody_sim"]
    got = [(fr, m, r) for fr, m, r in picked if r is not None and r.evaluated]
    if not got:
        return None
    plt = _plt()
    frs = sorted({fr for fr, _, _ in got})
    models = sorted({m for _, m, _ in got})
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 3))
    for ax, metric in zip(axes, metrics):
        for k, model in enumerate(models):
            rs = [(fr, r) for fr, m, r in got if m == model]
            off = (k - (len(models) - 1) / 2) * 0.12
            _errbar(ax, [frs.index(fr) + off for fr, _ in rs], [r.stat(metric) for _, r in rs], model, line=False)
        ax.set_xticks(range(len(frs)), [str(f) for f in frs])
        ax.set_xlim(-0.5, len(frs) - 0.5)
        ax.set_title(METRICS[metric][0])
        ax.set_xlabel("frame rate (Hz)")
    _legend(axes[0])
    return _save(fig, out / "table2_paradigm_framerate.png")


def plot_steps(data, out: Path) -> Path | None:
    if not data:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(8, 3))
    for ax, metric in zip(axes, ["fad", "clap"]):
        for fr, by_steps in sorted(data.items()):
            steps = sorted(by_steps)
            _errbar(ax, steps, [by_steps[s][metric] for s in steps], f"{fr} Hz")
        ax.set_xscale("log")
        ax.set_xlabel("Euler steps")
        ax.set_title(METRICS[metric][0])
        _legend(ax)
    return _save(fig, out / "fig3_euler_steps.png")


def plot_t7(data, out: Path) -> Path | None:
    if not data:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.5, 3))
    for fr in sorted({k[0] for k in data}):
        ds = sorted(d for f, d in data if f == fr)
        _errbar(ax, ds, [data[(fr, d)] for d in ds], f"{fr} Hz")
    ax.set_xlabel("duration (s)")
    ax.set_title("FAD↓ (figure 4 / table 7)")
    _legend(ax)
    return _save(fig, out / "fig4_framerate_duration.png")


def plot_f8(data, out: Path) -> Path | None:
    if not data:
        return None
    plt = _plt()
    metrics = ["fad", "clap", "pq", "ce"]
    fig, axes = plt.subplots(1, 4, figsize=(13, 3))
    for ax, metric in zip(axes, metrics):
        for (model, d), by_b in sorted(data.items()):
            bs = sorted(by_b)
            _errbar(ax, bs, [by_b[b][metric] for b in bs], f"{model}, {d:g} s")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size")
        ax.set_title(METRICS[metric][0])
    _legend(axes[0])
    return _save(fig, out / "fig8_batch_duration.png")


def plot_entropy(curves, out: Path) -> Path | None:
    if not curves:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for label, c in curves.items():
        ax.plot(c.steps, c.mean, label=label)
        ax.fill_between(c.steps, c.lo, c.hi, alpha=0.25)
    ax.set_xlabel("sampling step")
    ax.set_ylabel("entropy (nats)")
    _legend(ax)
    return _save(fig, out / "fig9_entropy.png")


def plot_spectrograms(columns: dict[str, list], captions: list[str], sample_rate: int, out: Path) -> Path | None:
    """One PNG: a row per prompt, a column per source (``{label: [audio per prompt]}``), each a log-mel
    spectrogram (64 bands, 0-8 kHz, dB) on one shared colour scale."""
    import numpy as np
    import torch
    import torchaudio

    labels = [k for k, v in columns.items() if v]
    if not labels:
        return None
    rows = min(len(v) for k, v in columns.items() if v)
    mel = torchaudio.transforms.MelSpectrogram(sample_rate=sample_rate, n_fft=2048, hop_length=512, n_mels=64,
                                               f_max=8000.0)
    specs = {k: [10 * np.log10(mel(torch.as_tensor(np.asarray(a, np.float32))).numpy() + 1e-8)
                 for a in columns[k][:rows]] for k in labels}
    top = max(float(s.max()) for v in specs.values() for s in v)
    plt = _plt()
    fig, axes = plt.subplots(rows, len(labels), figsize=(3.2 * len(labels), 2.4 * rows), squeeze=False)
    for i in range(rows):
        for j, k in enumerate(labels):
            ax = axes[i][j]
            s = specs[k][i]
            seconds = len(columns[k][i]) / sample_rate
            im = ax.imshow(s, origin="lower", aspect="auto", vmin=top - 80, vmax=top, cmap="magma",
                           extent=(0, seconds, 0, 64))
            ax.set_title(k if i == 0 else "", fontsize=9)
            ax.set_xlabel("s", fontsize=7)
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(f"prompt {i + 1}\n(mel bands)", fontsize=8)
    fig.colorbar(im, ax=axes, shrink=0.8, label="dB")
    fig.suptitle("; ".join(f"{i + 1}: {c[:70]}" for i, c in enumerate(captions[:rows])), fontsize=7)
    fig.savefig(out / "spectrograms.png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return out / "spectrograms.png"
