"""Table 5 in the study report: the human ratings logged by ``arfm study results`` (:mod:`arfm.listening`).

``arfm study results`` logs ``listening/table5.md`` and ``listening/table5.png`` to a run tagged
``job=listening`` of the experiment; the report shows the newest such run of each listening study, as written
there (n, mean, 95% interval and its method, the raters kept after screening), and copies its plot.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

HEADING = "## Table 5 — human ratings"
ARTIFACT_DIR = "listening"


def listening_section(uri: str, experiment: str, out: Path) -> tuple[str, list[Path]]:
    """Markdown of every listening study logged to ``experiment`` and the plots copied into ``out``."""
    none = (f"{HEADING}\n\nnot run (no listening study results in this experiment: `arfm study create`, "
            "`arfm study serve`, then `arfm study results` log them here)")
    if not uri:
        return none, []
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return none, []
    runs = client.search_runs([exp.experiment_id], "tags.job = 'listening' and attributes.status = 'FINISHED'",
                              order_by=["attributes.start_time DESC"])
    newest = {}
    for r in runs:
        newest.setdefault(r.data.tags.get("listening_study", r.info.run_id), r)
    if not newest:
        return none, []
    texts, figs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for study, r in newest.items():
            try:
                md = Path(client.download_artifacts(r.info.run_id, f"{ARTIFACT_DIR}/table5.md", tmp)).read_text()
            except Exception as exc:  # noqa: BLE001 - a broken run is named, not hidden
                texts.append(f"{HEADING} (listening study `{study}`)\n\n`{r.info.run_id[:8]}`: "
                             f"{ARTIFACT_DIR}/table5.md could not be read ({type(exc).__name__}: {exc})")
                continue
            texts.append(md.strip() + f"\n\nLogged by run `{r.info.run_id[:8]}`.")
            try:
                png = client.download_artifacts(r.info.run_id, f"{ARTIFACT_DIR}/table5.png", tmp)
            except Exception:  # noqa: BLE001 - the table stands without its plot
                continue
            dest = Path(out) / f"table5_{re.sub(r'[^A-Za-z0-9_-]+', '_', study)}.png"
            shutil.copyfile(png, dest)
            figs.append(dest)
    return "\n\n".join(texts), figs
