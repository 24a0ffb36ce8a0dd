"""The report's picture of the sound: for two prompts, the reference clip, the codec's reconstruction and the AR
and FM samples side by side (one PNG of spectrograms), with links to the WAVs.

Every evaluated run logs its first clips as ``eval/audio/default_<i>.wav`` (the prompts are the same, in the same
order, for every run of a study); the section copies them next to the report (``audio/``) so the links work
wherever the report folder goes.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from arfm.evaluate.runs import RunView

N_PROMPTS = 2


def _fetch(client: Any, run: RunView, i: int, dest: Path) -> Path | None:
    name = f"default_{i:02d}.wav"
    try:
        with tempfile.TemporaryDirectory() as tmp:
            p = Path(client.download_artifacts(run.run_id, f"eval/audio/{name}", tmp))
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(p, dest)
        return dest
    except Exception:  # noqa: BLE001 - a run without logged audio has no column
        return None


def _captions(client: Any, run: RunView) -> dict[str, str]:
    try:
        with tempfile.TemporaryDirectory() as tmp:
            return json.loads(Path(client.download_artifacts(run.run_id, "eval/audio/captions.json", tmp)).read_text())
    except Exception:  # noqa: BLE001
        return {}


def sound_section(picked: list[tuple], base: list[RunView], out: Path, uri: str) -> tuple[str, Path | None]:
    """Markdown (links to the WAVs) and the spectrogram PNG, from the main frame rate's AR and FM runs
    (``picked``: table 2's ``(frame rate, model, run)``) and the reference and codec baseline runs."""
    import soundfile as sf
    from mlflow.tracking import MlflowClient

    from arfm.evaluate.plots import plot_spectrograms

    title = "## The sound — spectrograms of two prompts\n\n"
    models = [(fr, m, r) for fr, m, r in picked if r is not None and r.evaluated]
    if not models or not uri:
        return title + "not run (no evaluated text-conditioned model)", None
    fr = 50 if any(f == 50 for f, _, _ in models) else models[0][0]
    sources: list[tuple[str, RunView]] = []
    for kind, label in (("reference", "reference"), ("codec_latent", "codec (latent)")):
        cands = [b for b in base if b.baseline == kind and b.frame_rate == fr]
        if cands:
            sources.append((label, max(cands, key=lambda r: r.start_time)))
    sources += [(m, r) for f, m, r in models if f == fr]
    client = MlflowClient(tracking_uri=uri)
    audio_dir = out / "audio"
    columns: dict[str, list] = {}
    links, sample_rate = [], 32000
    for label, run in sources:
        clips = []
        for i in range(N_PROMPTS):
            slug = label.lower().replace(" ", "_").replace("(", "").replace(")", "")
            path = _fetch(client, run, i, audio_dir / f"{slug}_{i + 1}.wav")
            if path is None:
                break
            audio, sample_rate = sf.read(path, dtype="float32")
            clips.append(audio)
            links.append((i, label, path.relative_to(out).as_posix()))
        columns[label] = clips
    captions_map = _captions(client, sources[-1][1])
    captions = [captions_map.get(f"default_{i:02d}.wav", "") for i in range(N_PROMPTS)]
    png = plot_spectrograms(columns, captions, sample_rate, out)
    if png is None:
        return title + "not run (the runs logged no audio)", None
    lines = [title + f"{fr} Hz; the same prompts for every column ({', '.join(columns)}).", ""]
    for i in range(N_PROMPTS):
        row = [f"[{label}]({href})" for j, label, href in links if j == i]
        if row:
            lines.append(f"- prompt {i + 1} — “{captions[i]}”: " + " · ".join(row))
    lines += ["", f"![spectrograms]({png.name})"]
    return "\n".join(lines), png
