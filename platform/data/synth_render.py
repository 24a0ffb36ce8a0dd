"""Sound for the synthetic dataset: additive/FM instruments, synthesized drums, mixing. numpy + scipy only.

Harmonic instruments are additive: harmonics come from the Chebyshev recurrence
``sin((k+1)x) = 2 cos(x) sin(kx) - sin((k-1)x)`` (one multiply-add per harmonic and sample, no ``sin`` calls),
each with its own exponential decay (faster for higher harmonics: plucks, pianos) or a static spectrum under
an ADSR envelope (pads, organ, winds). Electric piano, clavinet and vibraphone-like bells use two-operator FM
with harmonic ratios, so every partial sits on the note's harmonic series and chroma stays clean.
Drums are noise and pitch-swept sines. The mix gets per-stem levels, a short synthetic reverb and a limiter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import signal

from arfm.data.synth_music import Arrangement, Note

TWO_PI = 2.0 * math.pi


@dataclass(frozen=True)
class Instrument:
    engine: str  # "pluck" (per-harmonic decay), "sustain" (ADSR, static spectrum) or "fm"
    rolloff: float = 1.0  # harmonic k has amplitude k**-rolloff
    odd: bool = False  # odd harmonics only (clarinet, square)
    harmonics: int = 12
    tau: float = 1.0  # pluck: decay time constant of the fundamental at C4 (s)
    beta: float = 0.5  # pluck: decay rate grows by this fraction per harmonic
    attack: float = 0.005
    decay: float = 0.2
    sustain: float = 0.8
    release: float = 0.08
    vibrato: float = 0.0  # depth in cents
    vib_rate: float = 5.5
    detune: float = 0.0  # cents of a second detuned voice (pads, strings); 0: one voice
    noise: float = 0.0  # breath / bow noise level
    ratio: float = 1.0  # fm modulator ratio
    index: float = 1.5  # fm index at full velocity
    index_tau: float = 0.3  # fm index decay (s)
    pluck_pos: float = 0.0  # pluck: zeroes harmonics that are multiples of 1/pluck_pos
    gain: float = 1.0


INSTRUMENTS: dict[str, Instrument] = {
    "piano": Instrument("pluck", rolloff=1.1, harmonics=14, tau=1.6, beta=0.45, attack=0.002, release=0.12),
    "electric piano": Instrument("fm", ratio=1.0, index=1.6, index_tau=0.25, tau=1.8, attack=0.003, release=0.15),
    "clavinet": Instrument("fm", ratio=2.0, index=2.2, index_tau=0.12, tau=0.6, attack=0.002, release=0.05,
                           gain=0.8),
    "vibraphone": Instrument("fm", ratio=4.0, index=0.7, index_tau=0.5, tau=1.6, attack=0.002, release=0.3,
                             vibrato=8.0, vib_rate=5.0),
    "bell": Instrument("fm", ratio=2.0, index=1.2, index_tau=0.6, tau=1.4, attack=0.001, release=0.4),
    "acoustic guitar": Instrument("pluck", rolloff=1.0, harmonics=16, tau=1.2, beta=0.7, attack=0.002,
                                  release=0.08, pluck_pos=0.18),
    "electric guitar": Instrument("pluck", rolloff=0.8, harmonics=18, tau=1.5, beta=0.35, attack=0.002,
                                  release=0.06, pluck_pos=0.22, gain=0.85),
    "harp": Instrument("pluck", rolloff=1.4, harmonics=10, tau=1.8, beta=0.6, attack=0.002, release=0.4),
    "synth pluck": Instrument("pluck", rolloff=1.0, harmonics=14, tau=0.5, beta=1.2, attack=0.002, release=0.1),
    "organ": Instrument("sustain", rolloff=1.6, harmonics=8, attack=0.01, decay=0.05, sustain=1.0, release=0.05,
                        vibrato=6.0, vib_rate=6.5, gain=0.7),
    "synth pad": Instrument("sustain", rolloff=1.3, harmonics=8, attack=0.35, decay=0.5, sustain=0.85,
                            release=0.5, detune=9.0, gain=0.8),
    "strings": Instrument("sustain", rolloff=1.0, harmonics=10, attack=0.25, decay=0.3, sustain=0.9,
                          release=0.35, vibrato=12.0, vib_rate=5.2, detune=6.0, noise=0.01, gain=0.8),
    "electric bass": Instrument("pluck", rolloff=1.4, harmonics=8, tau=1.4, beta=0.6, attack=0.004, release=0.06),
    "upright bass": Instrument("pluck", rolloff=1.8, harmonics=6, tau=0.9, beta=0.5, attack=0.01, release=0.08),
    "synth bass": Instrument("pluck", rolloff=1.0, harmonics=12, tau=3.0, beta=1.5, attack=0.003, release=0.04,
                             gain=0.8),
    "sub bass": Instrument("sustain", rolloff=3.0, harmonics=3, attack=0.01, decay=0.3, sustain=0.8, release=0.08),
    "synth lead": Instrument("sustain", rolloff=1.0, harmonics=12, attack=0.01, decay=0.15, sustain=0.75,
                             release=0.08, vibrato=15.0, vib_rate=5.5),
    "square lead": Instrument("sustain", rolloff=1.0, odd=True, harmonics=13, attack=0.008, decay=0.1,
                              sustain=0.8, release=0.06, vibrato=10.0, vib_rate=6.0),
    "lead guitar": Instrument("sustain", rolloff=0.9, harmonics=14, attack=0.005, decay=0.6, sustain=0.55,
                              release=0.08, vibrato=18.0, vib_rate=5.0),
    "flute": Instrument("sustain", rolloff=2.2, harmonics=5, attack=0.05, decay=0.1, sustain=0.9, release=0.08,
                        vibrato=14.0, vib_rate=5.0, noise=0.03),
    "whistle": Instrument("sustain", rolloff=3.5, harmonics=3, attack=0.03, decay=0.1, sustain=0.9,
                          release=0.06, vibrato=20.0, vib_rate=6.0, noise=0.015),
    "clarinet": Instrument("sustain", rolloff=1.2, odd=True, harmonics=9, attack=0.04, decay=0.1, sustain=0.85,
                           release=0.07, vibrato=6.0),
    "trumpet": Instrument("sustain", rolloff=0.7, harmonics=12, attack=0.03, decay=0.15, sustain=0.8,
                          release=0.07, vibrato=10.0, vib_rate=5.5, gain=0.8),
    "saxophone": Instrument("sustain", rolloff=0.9, harmonics=12, attack=0.04, decay=0.15, sustain=0.85,
                            release=0.08, vibrato=16.0, vib_rate=5.0, noise=0.02, gain=0.85),
    "violin": Instrument("sustain", rolloff=0.85, harmonics=14, attack=0.07, decay=0.1, sustain=0.9, release=0.1,
                         vibrato=22.0, vib_rate=5.8, noise=0.01, gain=0.85),
}


def midi_hz(m: float) -> float:
    return 440.0 * 2.0 ** ((m - 69.0) / 12.0)


def _adsr(n: int, gate: int, sr: int, ins: Instrument) -> np.ndarray:
    """Attack-decay-sustain during the gate, then an exponential release (continuous at the gate)."""
    t = np.arange(n, dtype=np.float32) / np.float32(sr)
    a = max(ins.attack, 1e-4)
    env = np.where(t < a, t / a, ins.sustain + (1 - ins.sustain) * np.exp(-(t - a) / max(ins.decay, 1e-3)))
    if gate < n:
        level = env[gate - 1] if gate > 0 else 0.0
        env[gate:] = level * np.exp(-(t[gate:] - t[gate]) / max(ins.release / 4.6, 1e-3))
    return env


def _harmonic_sum(phase: np.ndarray, amps: np.ndarray, decay1: np.ndarray | None, q: np.ndarray | None):
    """sum_k amps[k] * d_k(t) * sin((k+1) phase), with d_k = decay1 * q**k (or 1 without decays). In place."""
    s_prev = np.zeros_like(phase)
    s = np.sin(phase)
    c2 = np.cos(phase)
    c2 *= 2.0
    out = np.zeros_like(phase)
    tmp = np.empty_like(phase)
    d = None if decay1 is None else decay1.copy()
    for a in amps:
        if a:
            if d is None:
                np.multiply(s, a, out=tmp)
            else:
                np.multiply(s, d, out=tmp)
                tmp *= a
            out += tmp
        np.multiply(c2, s, out=tmp)
        tmp -= s_prev
        s_prev, s, tmp = s, tmp, s_prev
        if d is not None:
            d *= q
    return out


def render_note(ins: Instrument, midi: float, gate_s: float, vel: float, sr: int, rng: np.random.Generator):
    """One note as float64[n]: the gate, then the release tail (plucks stop once decayed by ~60 dB)."""
    f0 = midi_hz(midi)
    gate = max(1, int(round(gate_s * sr)))
    if ins.engine == "sustain":
        n = gate + int(ins.release * sr)
    else:
        tau = ins.tau * (261.6 / f0) ** 0.35
        n = min(gate + int(ins.release * sr), int(6.9 * tau * sr) + 1)
    t = (np.arange(n) / sr).astype(np.float32)
    phase0 = rng.uniform(0, TWO_PI)
    if ins.vibrato:
        depth = (2.0 ** (ins.vibrato / 1200.0) - 1.0) * np.clip((t - 0.15) / 0.25, 0, 1)
        freq = f0 * (1.0 + depth * np.sin(TWO_PI * ins.vib_rate * t + rng.uniform(0, TWO_PI)))
        phase = TWO_PI / sr * np.cumsum(freq, dtype=np.float64) + phase0
    else:
        phase = (TWO_PI * f0 / sr) * np.arange(1, n + 1, dtype=np.float64) + phase0
    phase = np.mod(phase, TWO_PI).astype(np.float32)  # float32 from here on: half the memory traffic
    kmax = max(1, min(ins.harmonics, int(0.42 * sr / (f0 * 1.02))))
    k = np.arange(1, kmax + 1)
    amps = k ** -ins.rolloff * (0.6 + 0.4 * vel) ** (k - 1)  # softer notes are darker
    if ins.odd:
        amps[1::2] = 0.0
    if ins.pluck_pos:
        amps *= np.abs(np.sin(math.pi * k * ins.pluck_pos)) + 0.05

    if ins.engine == "pluck":
        rate = 1.0 / tau
        y = _harmonic_sum(phase, amps, np.exp(-t * rate), np.exp(-t * rate * ins.beta))
        env = np.minimum(1.0, t / max(ins.attack, 1e-4))
        if gate < n:
            env[gate:] *= np.exp(-(t[gate:] - t[gate]) / max(ins.release / 4.6, 1e-3))
        y *= env
    elif ins.engine == "fm":
        tau = ins.tau * (261.6 / f0) ** 0.35
        index = ins.index * (0.5 + 0.5 * vel) * np.exp(-t / ins.index_tau)
        y = np.sin(phase + index * np.sin(ins.ratio * phase)) * np.exp(-t / tau)
        y += 0.25 * np.sin(2 * phase) * np.exp(-t / (0.5 * tau))  # a little body on the octave
        env = np.minimum(1.0, t / max(ins.attack, 1e-4))
        if gate < n:
            env[gate:] *= np.exp(-(t[gate:] - t[gate]) / max(ins.release / 4.6, 1e-3))
        y *= env
    else:
        y = _harmonic_sum(phase, amps, None, None)
        if ins.detune:
            ratio = 2.0 ** (ins.detune / 1200.0)
            phase2 = np.mod((TWO_PI * f0 * ratio / sr) * np.arange(1, n + 1, dtype=np.float64)
                            + rng.uniform(0, TWO_PI), TWO_PI).astype(np.float32)
            y = 0.6 * (y + _harmonic_sum(phase2, amps, None, None))
        if ins.noise:
            y += ins.noise * _band_noise(rng, n, sr, f0) * 8.0
        y *= _adsr(n, gate, sr, ins)
    return y * (vel * ins.gain / max(1.0, float(np.sum(amps)) ** 0.5))


def _band_noise(rng, n: int, sr: int, f0: float) -> np.ndarray:
    """Breath noise around the note's upper harmonics (a cheap one-pole band)."""
    x = rng.standard_normal(n)
    b, a = signal.butter(1, [min(0.9, 2 * f0 / sr), min(0.95, 8 * f0 / sr)], btype="band")
    return signal.lfilter(b, a, x).astype(np.float32)


def render_track(notes: list[Note], name: str, sr: int, n: int, offset: int, rng) -> np.ndarray:
    """Sum the notes of one instrument into a float64 buffer of ``n`` samples; sample 0 is clip time -offset/sr."""
    ins = INSTRUMENTS[name]
    out = np.zeros(n)
    for note in notes:
        start = int(round(note.start * sr)) + offset
        if start >= n:
            continue
        y = render_note(ins, note.midi, note.dur, note.vel, sr, rng)
        if start + len(y) <= 0:
            continue
        lo, hi = max(0, start), min(n, start + len(y))
        out[lo:hi] += y[lo - start:hi - start]
    return out


# ---------------------------------------------------------------------------------------------- drums
KITS = {  # kick: start Hz, end Hz, pitch tau, amp tau; snare: tone Hz, noise tau, noise band; hat: highpass Hz
    "acoustic": dict(kick=(150, 55, 0.035, 0.28), snare=(190, 0.13, (1500, 9000)), hat=7000, level=1.0),
    "electronic": dict(kick=(170, 48, 0.05, 0.45), snare=(210, 0.16, (1200, 8000)), hat=8000, level=1.0, clap=True),
    "brush": dict(kick=(120, 60, 0.03, 0.2), snare=(0, 0.2, (600, 6000)), hat=6000, level=0.8),
    "lofi": dict(kick=(140, 52, 0.04, 0.3), snare=(180, 0.12, (900, 5000)), hat=5000, level=0.9),
    "orchestral": dict(kick=(110, 62, 0.06, 0.55), snare=(220, 0.1, (1500, 8000)), hat=7000, level=0.9),
}


def _wn(hz: float, sr: int) -> float:
    """A filter corner as a fraction of Nyquist, kept inside (0, 0.95) for any sample rate."""
    return min(0.95, hz / (sr / 2))


def _hp(x: np.ndarray, hz: float, sr: int, order: int = 2) -> np.ndarray:
    b, a = signal.butter(order, _wn(hz, sr), btype="high")
    return signal.lfilter(b, a, x)


def _metallic(n: int, sr: int, rng) -> np.ndarray:
    t = np.arange(n) / sr
    base = 40.0 * rng.uniform(0.95, 1.05)
    return sum(np.sign(np.sin(TWO_PI * base * r * t + rng.uniform(0, TWO_PI)))
               for r in (2.0, 3.0, 4.16, 5.43, 6.79, 8.21)) / 6.0


def drum_bank(kit: str, sr: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One sample per drum sound for a clip (slightly different every clip)."""
    k = KITS[kit]
    j = lambda: rng.uniform(0.93, 1.07)  # noqa: E731
    out = {}
    f1, f2, tp, ta = k["kick"]
    n = int(0.7 * sr)
    t = np.arange(n) / sr
    f = f2 * j() + (f1 * j() - f2) * np.exp(-t / tp)
    kick = np.sin(TWO_PI * np.cumsum(f) / sr) * np.exp(-t / (ta * j()))
    click = _hp(rng.standard_normal(n), 2000, sr) * np.exp(-t / 0.004) * 0.3
    out["kick"] = np.tanh(1.5 * (kick + click)) / np.tanh(1.5)

    tone_hz, ntau, band = k["snare"]
    n = int(0.5 * sr)
    t = np.arange(n) / sr
    b, a = signal.butter(2, [_wn(band[0], sr), _wn(band[1], sr)], btype="band")
    noise = signal.lfilter(b, a, rng.standard_normal(n))
    noise /= np.abs(noise).max()
    if kit == "brush":
        env = np.minimum(1, t / 0.01) * np.exp(-t / ntau)
        out["snare"] = 0.8 * noise * env
    else:
        tone = np.sin(TWO_PI * tone_hz * j() * t) * np.exp(-t / 0.05) + 0.5 * np.sin(
            TWO_PI * tone_hz * 1.6 * t) * np.exp(-t / 0.03)
        snare = 0.55 * tone + noise * np.exp(-t / (ntau * j()))
        if k.get("clap"):
            bursts = sum(np.exp(-np.maximum(t - d, 0) / 0.008) * (t >= d) for d in (0.0, 0.011, 0.022))
            snare = 0.5 * snare + noise * (0.6 * bursts + 0.5 * np.exp(-t / 0.15))
        out["snare"] = snare / np.abs(snare).max()

    for name, tau, dur in (("hat", 0.035, 0.25), ("open_hat", 0.25, 0.8), ("ride", 0.5, 1.5), ("crash", 1.1, 2.5)):
        n = int(dur * sr)
        t = np.arange(n) / sr
        x = 0.6 * _metallic(n, sr, rng) + 0.4 * rng.standard_normal(n)
        x = _hp(x, k["hat"] * (0.7 if name in ("ride", "crash") else 1.0), sr, order=4)
        x = x * np.exp(-t / (tau * j()))
        if name == "ride":
            x += 0.15 * _hp(np.sin(TWO_PI * 3200 * t), 2000, sr) * np.exp(-t / 0.3)
        out[name] = x / np.abs(x).max()
    n = int(0.2 * sr)
    t = np.arange(n) / sr
    b, a = signal.butter(2, [min(_wn(5000, sr), 0.5 * _wn(12000, sr)), _wn(12000, sr)], btype="band")
    sh = signal.lfilter(b, a, rng.standard_normal(n)) * np.minimum(1, t / 0.015) * np.exp(-t / 0.05)
    out["shaker"] = sh / np.abs(sh).max()
    return out


DRUM_GAIN = {"kick": 1.0, "snare": 0.8, "hat": 0.22, "open_hat": 0.2, "ride": 0.22, "crash": 0.25, "shaker": 0.3}


def render_drums(hits, kit: str, sr: int, n: int, offset: int, rng) -> np.ndarray:
    bank = drum_bank(kit, sr, rng)
    out = np.zeros(n)
    for h in hits:
        s = bank[h.kind]
        start = int(round(h.time * sr)) + offset
        if start >= n or start + len(s) <= 0:
            continue
        lo, hi = max(0, start), min(n, start + len(s))
        out[lo:hi] += (h.vel * DRUM_GAIN[h.kind]) * s[lo - start:hi - start]
    return out * KITS[kit]["level"]


# ---------------------------------------------------------------------------------------------- mixing
STEM_DB = {"lead": -17.0, "comp": -21.0, "pad": -26.0, "bass": -20.0, "drums": -18.0}


def _rms_db(x: np.ndarray) -> float:
    return 10 * math.log10(float(np.mean(x * x)) + 1e-12)


def _reverb_ir(sr: int, rt60: float, rng) -> np.ndarray:
    n = int(min(1.5, rt60) * sr)
    t = np.arange(n) / sr
    ir = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)
    b, a = signal.butter(1, _wn(4000, sr))
    ir = signal.lfilter(b, a, ir)
    ir[: int(0.012 * sr)] = 0.0  # pre-delay
    return ir / math.sqrt(float(np.sum(ir * ir)))


def mix(arr: Arrangement, sr: int, rng: np.random.Generator, return_stems: bool = False):
    """Render every track, balance the stems, add reverb and limit. Returns float32[S] (and stems)."""
    first = min([n.start for notes in arr.tracks.values() for n in notes] + [h.time for h in arr.drums] + [0.0])
    offset = int(math.ceil(-first * sr)) + 1
    n_clip = int(round(arr.seconds * sr))
    n = offset + n_clip
    stems = {}
    for role, notes in arr.tracks.items():
        stems[role] = render_track(notes, arr.instruments[role], sr, n, offset, rng)
    stems["drums"] = render_drums(arr.drums, arr.kit, sr, n, offset, rng)
    for role, x in stems.items():
        level = STEM_DB[role] + rng.uniform(-1.5, 1.5)
        rms = _rms_db(x[offset:])
        if rms > -90:
            stems[role] = x * 10 ** ((level - rms) / 20)
    send = 0.6 * stems["comp"] + stems.get("pad", 0.0) + 0.7 * stems["lead"] + 0.15 * stems["drums"]
    wet = signal.oaconvolve(send, _reverb_ir(sr, rng.uniform(0.8, 2.0), rng))[:n]
    y = sum(stems.values()) + arr.reverb * wet
    y = _hp(y, 30.0, sr, order=2)
    if arr.lofi:
        b, a = signal.butter(2, _wn(6000, sr))
        y = signal.lfilter(b, a, y)
        crackle = (rng.random(n) < 8.0 / sr) * rng.standard_normal(n) * 0.05
        y += crackle + 0.002 * rng.standard_normal(n)
    y = y[offset:]
    y *= 10 ** ((-14.0 - _rms_db(y)) / 20)  # loudness, then a soft limiter and a -1 dBFS peak ceiling
    y = np.tanh(y / 0.9) * 0.9
    y *= 0.891 / max(float(np.abs(y).max()), 1e-9)
    out = y.astype(np.float32)
    if return_stems:
        return out, {k: v[offset:].astype(np.float32) for k, v in stems.items()}
    return out
