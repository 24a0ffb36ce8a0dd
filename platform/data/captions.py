"""Captions for synthetic clips, written from the clip's parameters with varied phrasing.

Every caption names the style, the tempo in BPM, the key and mode, at least two instruments and a mood word;
the metre is named when it is 3/4. Templates, synonyms, instrument order and tempo wording vary with the
clip's random generator, so the same parameters can be described in several ways.
"""

from __future__ import annotations

import re

import numpy as np

from arfm.data.synth_music import Arrangement, key_name

TEMPO_WORDS = ((80, ("slow", "laid-back", "unhurried")), (105, ("mid-tempo", "relaxed", "easy")),
               (125, ("upbeat", "lively", "steady")), (999, ("fast", "driving", "brisk")))
LEAD_PHRASES = ("{lead} melody", "{lead} lead", "a {lead} playing the melody", "{lead} on the tune",
                "a catchy {lead} line")
COMP_PHRASES = ("{comp} chords", "{comp}", "{comp} comping", "a {comp} harmony")
TEMPLATES = (
    "{Mood} {style} in {key} at {bpm} BPM{meter}, with {inst}.",
    "A {tempo_word} {mood} {style} track in {key}, {bpm} bpm{meter}. Features {inst}.",
    "{style_cap} groove, {key}, {bpm} BPM{meter}: {inst}. The mood is {mood}.",
    "{Inst} in a {mood} {style} piece{meter}, {key}, tempo {bpm} BPM.",
    "{bpm} BPM {style} in {key}{meter}; {inst}; {mood} and {tempo_word}.",
    "An instrumental {style} tune in {key} at {bpm} bpm{meter} that feels {mood}, built on {inst}.",
    "{Mood}, {tempo_word} {style} ({key}, {bpm} BPM{meter}) featuring {inst}.",
)


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def make_caption(arr: Arrangement, rng: np.random.Generator) -> str:
    """A one-sentence description of ``arr``; deterministic for the state of ``rng``."""
    key = f"{key_name(arr.key)} {arr.mode}"
    if rng.random() < 0.3:
        key = f"the key of {key}"
    tempo_word = next(rng.choice(words) for limit, words in TEMPO_WORDS if arr.tempo < limit)
    ins = arr.instruments
    parts = [str(rng.choice(LEAD_PHRASES)).format(lead=ins["lead"]),
             str(rng.choice(COMP_PHRASES)).format(comp=ins["comp"])]
    if "pad" in ins and rng.random() < 0.8:
        pad_phrases = ("soft {p}", "{p} in the background", "a warm bed of {p}") if ins["pad"].endswith("s") else (
            "a soft {p}", "{p} in the background", "a warm {p} bed")
        parts.append(str(rng.choice(pad_phrases)).format(p=ins["pad"]))
    parts.append(str(rng.choice(("{b}", "a {b} line", "{b} groove"))).format(b=ins["bass"]))
    parts.append(str(rng.choice(("{d}", "{d} keeping time", "a steady beat on {d}"))).format(d=ins["drums"]))
    order = rng.permutation(len(parts) - 1)
    inst = _join([parts[i] for i in order] + [parts[-1]])
    meter = ""
    if arr.beats_per_bar == 3:
        meter = str(rng.choice((" in 3/4 time", " in three-four", ", 3/4 metre")))
    elif rng.random() < 0.15:
        meter = " in 4/4"
    fields = dict(style=arr.style_word, style_cap=_cap(arr.style_word), key=key, bpm=int(round(arr.tempo)),
                  meter=meter, inst=inst, Inst=_cap(inst), mood=arr.mood, Mood=_cap(arr.mood),
                  tempo_word=tempo_word)
    text = str(rng.choice(TEMPLATES)).format(**fields)
    return re.sub(r"\b([Aa]) (?=[aeiou])", lambda m: m.group(1) + "n ", text)
