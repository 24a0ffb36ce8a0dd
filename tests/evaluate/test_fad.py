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


def test_reference_stats_give_the_same_value_and_no_interval(loader):
    ref, gen = _set(0), _set(5)
    stats = fad.reference_stats(ref, SR, loader=loader)
    a = fad.fad_score(gen, None, SR, ref_stats=stats, loader=loader, bootstrap=20)
    b = fad.fad_score(gen, ref, SR, loader=loader, bootstrap=0)
    assert a.value == pytest.approx(b.value, rel=1e-6) and a.n == 6
    assert a.ci is None and "cannot be resampled" in a.extra["ci_method"]  # the reference is only statistics


class GaussianClips:
    """A fadtk-style loader whose "audio" is a clip's embedding frames, flattened: FAD on data with a known
    answer. A clip is ``F`` frames around its own centre (between-clip spread ``sb``, within-clip ``sw``), so the
    frames of a set follow ``N(mu, (sb + sw) I)`` and the true Fréchet distance of two sets is analytic."""

    name, sr, D, F = "gaussian-frames", 16000, 8, 20

    def enforce_min_len(self, x):
        return x

    def get_embedding(self, x):
        return np.asarray(x, dtype=np.float64).reshape(-1, self.D)

    def clips(self, rng, n, mu, sb, sw):
        return [(mu + np.sqrt(sb) * rng.standard_normal(self.D)
                 + np.sqrt(sw) * rng.standard_normal((self.F, self.D))).astype(np.float32).ravel() for _ in range(n)]


def _coverage(n: int, trials: int = 100):
    from fadtk.fad import calc_frechet_distance

    g = GaussianClips()
    mu_r, mu_g = np.zeros(g.D), np.full(g.D, 0.3)
    sb_r, sb_g, sw = 0.5, 0.8, 1.0
    truth = float(calc_frechet_distance(mu_r, (sb_r + sw) * np.eye(g.D), mu_g, (sb_g + sw) * np.eye(g.D)))
    rng = np.random.default_rng(n)
    hits, above, widths = 0, 0, []
    for i in range(trials):
        ref = g.clips(rng, n, mu_r, sb_r, sw)
        gen = g.clips(rng, n, mu_g, sb_g, sw)
        res = fad.fad_score(gen, ref, g.sr, loader=g, bootstrap=199, seed=i)
        lo, hi = res.ci
        hits += lo <= truth <= hi
        above += res.value > truth
        widths.append(hi - lo)
    return hits / trials, above / trials, float(np.median(widths))


def test_fad_interval_covers_the_true_distance():
    """95% intervals over 100 simulated evaluations with n = 8 (the quick preset) and n = 32 clips per set: the
    true Fréchet distance of the two populations must fall inside at least 88% of them (binomial sd at 95%:
    2 points), and the intervals must narrow as n grows (a fixed wide interval fails). The plug-in FAD lies
    above the truth in nearly every trial, so an interval of resampled values around it (the percentile
    interval, of one set or both) misses."""
    cov8, above8, width8 = _coverage(8)
    cov32, above32, width32 = _coverage(32)
    assert above8 > 0.9 and above32 > 0.8  # the bias the interval must account for
    assert cov8 >= 0.88 and cov32 >= 0.88, (cov8, cov32)
    assert width32 < 0.6 * width8, (width8, width32)


def test_clip_moments_give_the_pooled_statistics():
    from fadtk.fad import calc_embd_statistics

    g = GaussianClips()
    rng = np.random.default_rng(1)
    clips = [g.get_embedding(c) for c in g.clips(rng, 5, np.zeros(g.D), 0.5, 1.0)]
    mu, cov = fad._ClipMoments(clips).stats([0, 1, 2, 3, 4, 4])
    ref_mu, ref_cov = calc_embd_statistics(np.concatenate(clips + [clips[4]]))
    np.testing.assert_allclose(mu, ref_mu, atol=1e-12)
    np.testing.assert_allclose(cov, ref_cov, atol=1e-10)
    # two sets of one population: the basic interval reaches below zero and is cut there (a distance is >= 0)
    other = [g.get_embedding(c) for c in g.clips(rng, 5, np.zeros(g.D), 0.5, 1.0)]
    lo, hi = fad.fad_interval(clips, other, n_resamples=199)
    assert lo == 0.0 < hi


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


@pytest.mark.parametrize("dim", [2, 32, 64])
def test_the_bootstraps_frechet_distance_is_fadtks(dim):
    """The bootstrap's eigenvalue form of the Fréchet distance gives fadtk's value (sqrtm) on correlated,
    unequal covariances, near-singular ones included."""
    from fadtk.fad import calc_frechet_distance

    rng = np.random.default_rng(dim)
    for rank in (dim, max(1, dim // 2)):
        a = rng.normal(size=(4 * dim, dim)) @ rng.normal(size=(dim, dim))
        b = rng.normal(size=(4 * dim, rank)) @ rng.normal(size=(rank, dim)) + 0.5
        m1, c1, m2, c2 = a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False)
        want = float(np.real(calc_frechet_distance(m1, c1, m2, c2)))
        assert fad.frechet_eig(m1, c1, m2, c2) == pytest.approx(want, rel=1e-6, abs=1e-6 * dim)
