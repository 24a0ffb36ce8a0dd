"""The ceiling and floor rows of the report's tables (runs of :mod:`arfm.evaluate.baselines`).

Under the trained models of a table come, for the same frame rate and on the same prompts and metrics: the
reference clips, the codec's reconstructions (continuous latent: FM's ceiling; RVQ tokens: AR's ceiling) and the
untrained models of the same configuration (the floor), so a reader sees where each trained model sits between
the floor and the ceiling. :func:`rows` gives ``(label, run, metric prefix)`` for one table.
"""

from __future__ import annotations

from arfm.evaluate.runs import RunView, latest

CEILINGS = (("reference", "reference clips — ceiling"), ("codec_latent", "codec recon., latent — FM ceiling"),
            ("codec_tokens", "codec recon., RVQ tokens — AR ceiling"),
            ("vae_latent", "VAE recon. — FM (VAE) ceiling"))


def _pick(runs: list[RunView], **want) -> RunView | None:
    return latest([r for r in runs if all(getattr(r, k) == v for k, v in want.items())])


def ceilings(base: list[RunView], frame_rate: int | None) -> list[tuple[str, RunView, str]]:
    out = []
    for kind, label in CEILINGS:
        r = _pick(base, baseline=kind, frame_rate=frame_rate) if frame_rate else _pick(base, baseline=kind)
        if r is not None:
            out.append((label, r, ""))
    return out


def floors(base: list[RunView], conditioning: str, frame_rate: int | None = None,
           prefix: dict[str, str] | None = None) -> list[tuple[str, RunView, str]]:
    """Untrained AR and FM (on each latent) of a conditioning; ``prefix`` maps a paradigm to the variant its row
    reads."""
    out = []
    for par, latent, name in (("ar", "encodec", "AR"), ("fm", "encodec", "FM"), ("fm", "vae", "FM (VAE)")):
        want = {"baseline": "untrained", "paradigm": par, "conditioning": conditioning, "latent": latent}
        if frame_rate:
            want["frame_rate"] = frame_rate
        r = _pick(base, **want)
        if r is not None:
            out.append((f"untrained {name} — floor", r, (prefix or {}).get(par, "")))
    return out


def rows(base: list[RunView], table: str, frame_rate: int | None = None) -> list[tuple[str, RunView, str]]:
    """The ceiling and floor rows of ``table`` ("2", "3", "4" or "8")."""
    if not base:
        return []
    if table == "2":
        return ceilings(base, frame_rate) + floors(base, "text", frame_rate)
    if table == "3":
        return ceilings(base, frame_rate) + floors(base, "controls", frame_rate)
    if table == "4":
        out = ceilings(base, frame_rate) + floors(base, "inpainting", frame_rate, {"ar": "inpaint/", "fm": "inpaint/"})
        zs = _pick(base, baseline="untrained", paradigm="fm", conditioning="text", latent="encodec")
        if zs is not None and zs.variants("inpaint_zs"):
            out.append(("untrained FM, zero-shot — floor", zs, "inpaint_zs/"))
        return out
    if table == "8":
        out = ceilings(base, frame_rate)
        fm = _pick(base, baseline="untrained", paradigm="fm", conditioning="text", latent="encodec",
                   **({"frame_rate": frame_rate} if frame_rate else {}))
        if fm is not None:
            steps = sorted(int(v[5:]) for v in fm.variants("euler") if v[5:].isdigit())
            out += [(f"untrained FM, Euler {k} — floor", fm, f"euler{k}/") for k in steps]
            out.append(("untrained FM, run default — floor", fm, ""))
        return out
    raise ValueError(f"no baseline rows for table {table!r}")
