"""FAD through fadtk with the offline mel embedding: known answers and model naming."""

import numpy as np
import pytest

from arfm.evaluate import fad

SR = 16000


def _set(seed: int, n: int = 6, seconds: float = 3.0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    out = []
    for _ in range(n):
        f = rng.choice([196.0, 262.0, 330.0, 392.0])
        env = np.exp(-((t * 2) % 1.0) * 5)
        out.append((0.3 * np.sin(2 * np.pi * f * t) * env + 0.01 * rng.standard_normal(t.size)).astype(np.float32))
    return out


@pytest.fixture(scope="module")
def loader():
    return fad.get_loader("mel-offline")


def test_fad_of_a_set_with_itself_is_zero_and_grows_with_noise(loader):
    ref = _set(0)
    same = fad.fad_score(ref, ref, SR, loader=loader, bootstrap=0)
    assert same.ok and same.method == "mel-offline" and same.extra["model"] == "mel-offline"
    assert abs(same.value) < 1e-6
    rng = np.random.default_rng(1)
    scores = []
    for level in (0.003, 0.03, 0.3):
        noisy = [x + level * rng.standard_normal(x.size).astype(np.float32) for x in ref]
        scores.append(fad.fad_score(noisy, ref, SR, loader=loader, bootstrap=0).value)
    assert 0 < scores[0] < scores[1] < scores[2]


def test_reference_stats_and_bootstrap_interval(loader):
    ref, gen = _set(0), _set(5)
    stats = fad.reference_stats(ref, SR, loader=loader)
    a = fad.fad_score(gen, None, SR, ref_stats=stats, loader=loader, bootstrap=20)
    b = fad.fad_score(gen, ref, SR, loader=loader, bootstrap=0)
    assert a.value == pytest.approx(b.value, rel=1e-6)
    assert a.ci is not None and a.ci[0] <= a.ci[1] and a.n == 6


def test_mel_offline_is_a_fadtk_model_and_resampling_is_applied(loader, monkeypatch):
    import fadtk
    import fadtk.model_loader as ml

    assert isinstance(loader, fadtk.ModelLoader) and loader.sr == 16000 and loader.num_features == 64
    # fadtk's own list instantiates loaders that download in their constructors: stub it for the test
    monkeypatch.setattr(ml, "get_all_models", lambda: [])
    monkeypatch.setattr(fadtk, "get_all_models", ml.get_all_models)
    fad.register_with_fadtk()
    fad.register_with_fadtk()  # idempotent
    assert [m.name for m in fadtk.get_all_models()].count("mel-offline") == 1
    x = _set(0, n=1, seconds=2.0)[0]
    x32 = np.interp(np.arange(2 * 32000) / 32000, np.arange(x.size) / SR, x).astype(np.float32)
    e16, e32 = fad.embed([x], SR, loader)[0], fad.embed([x32], 32000, loader)[0]
    assert e16.shape == e32.shape and e16.shape[1] == 64
    assert np.abs(e16 - e32).mean() < 0.2


def test_unavailable_models_give_a_clear_reason(monkeypatch):
    import fadtk

    def offline(self):
        raise OSError("no network")

    monkeypatch.setattr(fadtk.VGGishModel, "load_model", offline)
    res = fad.fad_score(_set(0, n=2), _set(1, n=2), SR, model="vggish")
    assert not res.ok and res.value is None
    assert "harritaylor/torchvggish" in res.skipped and "mel-offline" in res.skipped
    with pytest.raises(ValueError, match="unknown FAD model"):
        fad.get_loader("no-such-model", load=False)
