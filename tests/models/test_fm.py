import pytest
import torch
from flow_matching.path import CondOTProbPath

from arfm.models.build import build_model
from arfm.models.cfg import Guidance, cfg_combine, nested_combine
from arfm.models.paths import conditional_velocity, ot_path

T, D = 12, 8
CONTROLS = {"chords": 193, "melody": 54}


def make_fm(**kw):
    torch.manual_seed(0)
    return build_model("fm", preset="tiny", text_dim=16, latent_dim=D, **kw).eval()


def latent(b=2, seed=0):
    return torch.randn(b, T, D, generator=torch.Generator().manual_seed(seed))


def test_path_and_target_follow_equation_2():
    sigma = 0.05
    g = torch.Generator().manual_seed(0)
    y0, y1 = torch.randn(4, T, D, generator=g, dtype=torch.float64), torch.randn(4, T, D, generator=g,
                                                                                   dtype=torch.float64)
    t = torch.tensor([0.0, 0.3, 0.7, 1.0], dtype=torch.float64)
    s = ot_path(sigma).sample(x_0=y0, x_1=y1, t=t)
    tt = t[:, None, None]
    assert torch.allclose(s.x_t, (1 - (1 - sigma) * tt) * y0 + tt * y1)
    assert torch.allclose(s.dx_t, y1 - (1 - sigma) * y0)
    # the target is eq. 2's field v_t(x | y1) evaluated on the path, and d psi / dt
    assert torch.allclose(conditional_velocity(s.x_t, y1, t, sigma), s.dx_t, atol=1e-10)
    eps = 1e-6
    s2 = ot_path(sigma).sample(x_0=y0, x_1=y1, t=t + eps)
    assert torch.allclose((s2.x_t - s.x_t) / eps, s.dx_t, atol=1e-6)
    # sigma_min = 0 is the package's CondOT path
    ref = CondOTProbPath().sample(x_0=y0, x_1=y1, t=t)
    s0 = ot_path(0.0).sample(x_0=y0, x_1=y1, t=t)
    assert torch.allclose(s0.x_t, ref.x_t) and torch.allclose(s0.dx_t, ref.dx_t)


def test_loss_is_eq4_weighted_mse(text):
    model = make_fm()
    y1, y0 = latent(), latent(seed=1)
    t = torch.tensor([0.2, 0.9])
    out = model({"latent": y1, "noise": y0, "t": t, "text": text[0], "text_mask": text[1]})
    memory, mask = model.text(*text)
    x_t = (1 - (1 - model.config.sigma_min) * t[:, None, None]) * y0 + t[:, None, None] * y1
    pred = model.velocity(x_t, t, memory, mask)
    per = (pred - (y1 - (1 - model.config.sigma_min) * y0)).pow(2).mean(dim=(1, 2))
    assert torch.allclose(out["loss"], ((1 + t) * per).mean(), atol=1e-6)
    assert torch.allclose(out["mse"], per.mean(), atol=1e-6)


def test_every_frame_can_change_every_output(text):
    model = make_fm()
    memory, mask = model.text(*text)
    x, t = latent(), torch.tensor([0.5, 0.5])
    base = model.velocity(x, t, memory, mask)
    for src, dst in ((0, T - 1), (T - 1, 0), (5, 2)):
        x2 = x.clone()
        x2[:, src] += 1.0
        diff = (model.velocity(x2, t, memory, mask) - base).abs().amax(dim=(0, 2))
        assert diff[dst] > 1e-6, f"frame {src} must influence frame {dst}"


def test_cfg_identities(text):
    model = make_fm(controls=CONTROLS)
    ctrl = {"chords": torch.randint(0, 193, (2, T)), "melody": torch.randint(0, 54, (2, T))}
    x, t = latent(), torch.tensor(0.4)
    memory, mask = model.text(*text)
    idx = model.controls.indices(ctrl, 2, T, "cpu")
    cond = model.velocity(x, t.expand(2), memory, mask, idx)
    # CFG weight 1 is the conditional prediction
    f1 = model.guided_field(*text, T, ctrl, cfg=1.0)
    assert torch.allclose(f1(x, t), cond, atol=1e-5)
    # multi-source with all weights 1 telescopes to the conditional prediction (batched branches)
    fm1 = model.guided_field(*text, T, ctrl, cfg=1.0, control_cfg={"chords": 1.0, "melody": 1.0})
    assert Guidance(1.0, {"chords": 1.0}, ["chords", "melody"]).n == 4
    assert torch.allclose(fm1(x, t), cond, atol=1e-5)
    # multi-source with zero control weights equals text-only CFG (controls null in both branches)
    ms0 = model.guided_field(*text, T, ctrl, cfg=3.0, control_cfg={"chords": 0.0, "melody": 0.0})(x, t)
    text_only = model.guided_field(*text, T, None, cfg=3.0)(x, t)
    assert torch.allclose(ms0, text_only, atol=1e-5)
    # single-source CFG by hand: null text and null controls in the unconditional branch
    null_mem, null_mask = model.text(*text, drop=torch.ones(2, dtype=torch.bool))
    uncond = model.velocity(x, t.expand(2), null_mem, null_mask, None)
    f3 = model.guided_field(*text, T, ctrl, cfg=3.0)(x, t)
    assert torch.allclose(f3, uncond + 3.0 * (cond - uncond), atol=1e-5)
    # control weights matter
    ms2 = model.guided_field(*text, T, ctrl, cfg=3.0, control_cfg={"chords": 4.0, "melody": 0.0})(x, t)
    assert not torch.allclose(ms2, ms0, atol=1e-4)
    # the combination functions themselves
    a, b = torch.randn(3), torch.randn(3)
    assert torch.allclose(cfg_combine(a, b, 1.0), a)
    assert torch.allclose(nested_combine([b, a], [2.0]), cfg_combine(a, b, 2.0))


def test_null_text_and_null_controls():
    model = make_fm(controls=CONTROLS)
    feats = torch.randn(2, 4, 16)
    mask = torch.tensor([[True, True, False, False], [False, False, False, False]])  # row 1 empty caption
    memory, m = model.text(feats, mask, drop=torch.tensor([True, False]))
    assert torch.equal(m, torch.tensor([[True, False, False, False]] * 2))
    assert torch.equal(memory[0, 0], model.text.null) and torch.equal(memory[1, 0], model.text.null)
    idx = model.controls.indices({"chords": torch.zeros(2, T, dtype=torch.long)}, 2, T, "cpu",
                                 drop={"chords": torch.tensor([True, False])})
    assert (idx["chords"][0] == 193).all() and (idx["chords"][1] == 0).all() and (idx["melody"] == 54).all()
    assert model.controls.tables["chords"].num_embeddings == 194


@pytest.mark.parametrize("solver", ["euler", "heun", "dopri5"])
def test_sample_shapes_and_nfe(text, solver, monkeypatch):
    """``info["nfe"]`` is the number of network calls, counted here independently of the solver wrapper."""
    model = make_fm(controls=CONTROLS)
    calls = []
    velocity = model.velocity
    monkeypatch.setattr(model, "velocity", lambda *a, **k: calls.append(1) or velocity(*a, **k))
    x, info = model.sample(*text, T, {"chords": torch.randint(0, 193, (2, T))}, solver=solver, steps=4, cfg=2.0,
                           rtol=1e-3, atol=1e-3, time_shift=2.0, generator=torch.Generator().manual_seed(0))
    assert x.shape == (2, T, D) and torch.isfinite(x).all()
    assert info["nfe"] == len(calls)
    if solver == "dopri5":  # an initial step-size probe, then 6 new stages per step (first-same-as-last)
        assert info["nfe"] > 6 and (info["nfe"] - 2) % 6 == 0 and info["steps"] is None
    else:
        assert info["nfe"] == {"euler": 4, "heun": 8}[solver] and info["steps"] == 4


def test_per_row_generators_make_each_rows_noise_its_own(text):
    """With one generator per row, row 0's sample depends on its own seed only, not on row 1's."""
    model = make_fm()
    kw = dict(solver="euler", steps=3, cfg=2.0)

    def gens(*seeds):
        return [torch.Generator().manual_seed(s) for s in seeds]

    a, _ = model.sample(*text, T, generator=gens(5, 6), **kw)
    b, _ = model.sample(*text, T, generator=gens(5, 9), **kw)
    assert torch.equal(a[0], b[0]) and not torch.allclose(a[1], b[1])
    one, _ = model.sample(text[0][:1], text[1][:1], T, generator=gens(5), **kw)
    assert torch.equal(one[0], a[0])  # alone or in a batch
    with pytest.raises(ValueError, match="generators"):
        model.sample(*text, T, generator=gens(5), **kw)


def test_euler_sampling_is_eq5(text):
    model = make_fm()
    noise = latent(seed=3)
    x, _ = model.sample(*text, T, solver="euler", steps=3, cfg=2.5, noise=noise)
    field = model.guided_field(*text, T, cfg=2.5)
    y = noise
    for i in range(3):
        y = y + field(y, torch.tensor(i / 3)) / 3
    assert torch.allclose(x, y, atol=1e-5)


def test_supervised_inpainting_keeps_known_frames(text):
    model = make_fm(inpainting="supervised")
    src = latent()
    out = model({"latent": src, "text": text[0], "text_mask": text[1]})
    assert torch.isfinite(out["loss"])
    for solver in ("euler", "dopri5"):
        x, info = model.inpaint(src, torch.tensor([2, 4]), torch.tensor([8, 10]), *text, mode="supervised",
                                solver=solver, steps=4, cfg=2.0, rtol=1e-3, atol=1e-3)
        assert torch.equal(x[0, :2], src[0, :2]) and torch.equal(x[0, 8:], src[0, 8:])
        assert torch.equal(x[1, :4], src[1, :4]) and torch.equal(x[1, 10:], src[1, 10:])
        assert not torch.allclose(x[0, 2:8], src[0, 2:8])
    with pytest.raises(ValueError):
        make_fm().inpaint(src, 2, 8, *text, mode="supervised")


def test_supervised_training_sees_known_frames_only_as_context(text):
    """Loss ignores known frames; the context channels carry the known latent and the mask."""
    model = make_fm(inpainting="supervised")
    src, noise, t = latent(), latent(seed=1), torch.tensor([0.3, 0.6])
    known = torch.zeros(2, T, dtype=torch.bool)
    known[:, :4] = True
    base = model({"latent": src, "noise": noise, "t": t, "known_mask": known, "text": text[0],
                  "text_mask": text[1]})["loss"]
    noise2 = noise.clone()
    noise2[:, :4] += 5.0  # noise of known frames is replaced by the source: no effect at all
    again = model({"latent": src, "noise": noise2, "t": t, "known_mask": known, "text": text[0],
                   "text_mask": text[1]})["loss"]
    assert torch.allclose(base, again, atol=1e-6)


def test_zero_shot_inpainting_keeps_known_frames(text):
    model = make_fm()
    src = latent()
    x, info = model.inpaint(src, 3, 9, *text, mode="zero_shot", steps=5, cfg=2.0,
                            generator=torch.Generator().manual_seed(0))
    assert torch.equal(x[:, :3], src[:, :3]) and torch.equal(x[:, 9:], src[:, 9:])
    assert info["nfe"] == 10  # 5 inversion + 5 generation steps
    assert not torch.allclose(x[:, 3:9], src[:, 3:9])


def test_tiny_fm_overfits_one_batch(text):
    torch.manual_seed(0)
    model = build_model("fm", preset="tiny", text_dim=16, latent_dim=D, text_dropout=0.0)
    g = torch.Generator().manual_seed(0)
    batch = {"latent": torch.randn(4, 16, D, generator=g), "noise": torch.randn(4, 16, D, generator=g),
             "t": torch.rand(4, generator=g), "text": torch.randn(4, 5, 16, generator=g),
             "text_mask": torch.ones(4, 5, dtype=torch.bool)}
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(100):
        loss = model(batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 10, (losses[0], losses[-1])
