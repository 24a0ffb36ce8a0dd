"""Fine-tuning: start a generative model from the weights of another (``train.init_from``, appendix J).

The source is one of

* an arfm saved-model folder (``config.yaml``, ``weights.pt``, ``meta.json``; also a Ray checkpoint folder
  holding one under ``model/``), ``runs:/RUN_ID/model``, ``models:/NAME/VERSION`` or a bare MLflow run id;
* a MusicGen checkpoint in the Hugging Face transformers format (``MusicgenForConditionalGeneration``): a
  local folder written by ``save_pretrained`` or a hub id such as ``facebook/musicgen-small``.

Every parameter of the new model whose name (after mapping MusicGen's names onto arfm's) and shape match the
source is copied. Embedding tables that differ only in their number of rows get the common leading rows:
code ``i`` and the empty/start token keep their rows, the three fill-in-the-middle tokens of a ``fim`` model
(which a text-to-music source lacks) keep their fresh initialisation. The rest is reported: ``new`` (in the
model, not in the source: e.g. the learned null text, a different text projection, the FFN biases MusicGen
does not have), ``dropped`` (in the source, not used: e.g. MusicGen's T5 and EnCodec, whose roles the
platform's text encoder and codec play) and ``mismatched`` (same name, other shape; kept fresh). The
optimizer always starts fresh: only weights are loaded.

MusicGen's tokens mean something only with its own codec: fine-tune a MusicGen checkpoint on shards made with
``codec.pretrained=facebook/encodec_32khz`` and its text projection with ``text.encoder=t5`` (t5-base).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from arfm.train.engine import INIT_REPORT as REPORT_FILE

_ARFM_FILES = ("config.yaml", "weights.pt", "meta.json")


class InitFromError(ValueError):
    """``train.init_from`` cannot be loaded; the message names the field and the source."""


def _arfm_dir(p: Path) -> Path | None:
    for d in (p, p / "model"):
        if all((d / f).is_file() for f in _ARFM_FILES):
            return d
    return None


def _is_musicgen_dir(p: Path) -> bool:
    cfg = p / "config.json"
    if not cfg.is_file():
        return False
    return json.loads(cfg.read_text()).get("model_type") == "musicgen"


def source_state(source: str, tracking_uri: str | None = None) -> tuple[str, dict[str, torch.Tensor]]:
    """``(format, state_dict in arfm names)`` of ``train.init_from``; format is ``"arfm"`` or ``"musicgen"``."""
    s = str(source)
    p = Path(s).expanduser()
    if p.exists():
        if not p.is_dir():
            raise InitFromError(f"train.init_from={s!r} is a file; give a saved-model folder or a MusicGen folder")
        d = _arfm_dir(p)
        if d is not None:
            return "arfm", _arfm_weights(d)
        if _is_musicgen_dir(p):
            return "musicgen", musicgen_state(str(p), local_only=True)
        raise InitFromError(f"train.init_from={s!r}: the folder holds neither an arfm saved model "
                            f"({', '.join(_ARFM_FILES)}) nor a MusicGen checkpoint (config.json of model_type "
                            "musicgen)")
    if s.startswith(("runs:/", "models:/")) or re.fullmatch(r"[0-9a-f]{32}", s):
        from arfm.generate import resolve_source

        d = _arfm_dir(resolve_source(s, tracking_uri))
        if d is None:
            raise InitFromError(f"train.init_from={s!r}: the artifact is not an arfm saved model")
        return "arfm", _arfm_weights(d)
    if re.fullmatch(r"[\w.-]+/[\w.-]+", s):
        return "musicgen", musicgen_state(s, local_only=False)
    raise InitFromError(f"train.init_from={s!r} is neither a folder, runs:/RUN_ID/model, models:/NAME/VERSION, "
                        "an MLflow run id nor a hub id (owner/name)")


def _arfm_weights(d: Path) -> dict[str, torch.Tensor]:
    return torch.load(d / "weights.pt", map_location="cpu", weights_only=True)


def musicgen_state(name_or_path: str, local_only: bool) -> dict[str, torch.Tensor]:
    """A MusicGen checkpoint's state dict with the decoder's names mapped onto :class:`ARModel`'s."""
    from transformers import MusicgenForConditionalGeneration

    try:
        model = MusicgenForConditionalGeneration.from_pretrained(name_or_path, local_files_only=local_only)
    except (OSError, ValueError) as exc:
        raise InitFromError(f"train.init_from={name_or_path!r}: cannot load a MusicGen checkpoint in the "
                            f"transformers format ({exc})") from exc
    return map_musicgen(model.state_dict())


_LAYER = re.compile(r"decoder\.model\.decoder\.layers\.(\d+)\.(.+)")
_DIRECT = {
    "self_attn.out_proj.weight": "self_attn.out.weight",
    "self_attn_layer_norm.weight": "norm_self.weight", "self_attn_layer_norm.bias": "norm_self.bias",
    "encoder_attn.q_proj.weight": "cross_attn.q.weight",
    "encoder_attn.out_proj.weight": "cross_attn.out.weight",
    "encoder_attn_layer_norm.weight": "norm_cross.weight", "encoder_attn_layer_norm.bias": "norm_cross.bias",
    "fc1.weight": "ffn.0.weight", "fc2.weight": "ffn.3.weight",
    "final_layer_norm.weight": "norm_ffn.weight", "final_layer_norm.bias": "norm_ffn.bias",
}


def map_musicgen(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """MusicGen (transformers) names -> arfm names. Query/key/value projections are stacked into arfm's fused
    ``qkv`` (self-attention) and ``kv`` (cross-attention); keys with no arfm counterpart keep their own name
    (and so are reported as dropped)."""
    out: dict[str, torch.Tensor] = {}
    for name, v in sd.items():
        m = _LAYER.fullmatch(name)
        if m:
            i, rest = m.groups()
            pre = f"backbone.blocks.{i}."
            if rest in _DIRECT:
                out[pre + _DIRECT[rest]] = v
            elif rest == "self_attn.q_proj.weight":
                out[pre + "self_attn.qkv.weight"] = torch.cat(
                    [v] + [sd[f"decoder.model.decoder.layers.{i}.self_attn.{x}_proj.weight"] for x in "kv"])
            elif rest == "encoder_attn.k_proj.weight":
                out[pre + "cross_attn.kv.weight"] = torch.cat(
                    [v, sd[f"decoder.model.decoder.layers.{i}.encoder_attn.v_proj.weight"]])
            elif rest in ("self_attn.k_proj.weight", "self_attn.v_proj.weight", "encoder_attn.v_proj.weight"):
                continue  # stacked above
            else:
                out[name] = v
            continue
        if m := re.fullmatch(r"decoder\.model\.decoder\.embed_tokens\.(\d+)\.weight", name):
            out[f"embed.{m.group(1)}.weight"] = v  # codes 0..card-1, then the pad/start token = arfm's empty
        elif m := re.fullmatch(r"decoder\.lm_heads\.(\d+)\.weight", name):
            out[f"heads.{m.group(1)}.weight"] = v
        elif name.startswith("decoder.model.decoder.layer_norm."):
            out["backbone.norm." + name.rsplit(".", 1)[1]] = v
        elif name.startswith("enc_to_dec_proj."):
            out["text.proj." + name.rsplit(".", 1)[1]] = v
        else:
            out[name] = v
    return out


def load_matching(model: torch.nn.Module, source: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Copy the matching tensors of ``source`` into ``model`` (in place); return what was loaded, new, dropped."""
    target = model.state_dict()
    loaded, partial, new, mismatched = [], {}, [], {}
    with torch.no_grad():
        for name, t in target.items():
            s = source.get(name)
            if s is None:
                new.append(name)
            elif s.shape == t.shape:
                t.copy_(s.to(t.dtype))
                loaded.append(name)
            elif name.startswith("embed.") and s.ndim == 2 and s.shape[1] == t.shape[1]:
                rows = min(s.shape[0], t.shape[0])
                t[:rows].copy_(s[:rows].to(t.dtype))
                partial[name] = f"rows 0-{rows - 1} of {t.shape[0]} loaded (source has {s.shape[0]})"
            else:
                mismatched[name] = f"model {tuple(t.shape)} vs source {tuple(s.shape)}: kept fresh"
    dropped = sorted(set(source) - set(target))
    model.load_state_dict(target)
    return {"loaded": loaded, "partial": partial, "new": new, "mismatched": mismatched, "dropped": dropped,
            "counts": {"loaded": len(loaded), "partial": len(partial), "new": len(new),
                       "mismatched": len(mismatched), "dropped": len(dropped)}}


def _group(names: list[str]) -> list[str]:
    """Collapse ``a.0.b``, ``a.1.b`` ... into ``a.*.b (n)`` for the log line."""
    groups: dict[str, int] = {}
    for n in names:
        key = re.sub(r"\.\d+\.", ".*.", n)
        key = re.sub(r"^(text_encoder|audio_encoder)\..*", r"\1.*", key)
        groups[key] = groups.get(key, 0) + 1
    return [f"{k} ({v})" if v > 1 else k for k, v in groups.items()]


def summary(report: dict[str, Any]) -> str:
    c = report["counts"]
    parts = [f"init_from {report['source']} ({report['format']}): {c['loaded']} tensors loaded"]
    if report["partial"]:
        parts.append(f"partly: {', '.join(report['partial'])}")
    for key in ("new", "mismatched", "dropped"):
        if c[key]:
            parts.append(f"{key}: {', '.join(_group(list(report[key])))}")
    return "; ".join(parts)


def init_from(model: torch.nn.Module, source: str, tracking_uri: str | None = None) -> dict[str, Any]:
    """Load ``source``'s matching weights into ``model``; return the report (see the module docstring)."""
    fmt, state = source_state(source, tracking_uri)
    report = {"source": str(source), "format": fmt, **load_matching(model, state)}
    if not report["loaded"] and not report["partial"]:
        raise InitFromError(f"train.init_from={source!r}: no parameter of the model matches the source "
                            f"({summary(report)})")
    return report


def write_report(report: dict[str, Any], out_dir: str | Path) -> Path:
    path = Path(out_dir) / REPORT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2))
    return path
