"""Multi-source CFG: JASCO's form, the nested form, and the weights under which they coincide."""

import pytest
import torch

from arfm.models.build import build_model
from arfm.models.cfg import Guidance, jasco_combine, nested_combine, nested_to_jasco

T, D, K, CARD = 8, 8, 4, 32
CONTROLS = {"chords": 193, "melody": 54}


def test_jasco_formula_on_hand_made_velocities():
    v_all, v_txt, v_null = torch.tensor([2.0, -1.0]), torch.tensor([1.0, 3.0]), torch.tensor([0.5, 0.0])
    # 4 * v_all + 1.5 * v_txt + (1 - 4 - 1.5) * v_null
    assert torch.allclose(jasco_combine(v_all, v_txt, v_null, 4.0, 1.5), torch.tensor([7.25, 0.5]))
    g = Guidance(1.5, None, ["chords", "melody"], cfg_all=4.0)
    assert g.mode == "jasco" and g.n == 3
    # branch-major rows: all conditions, text only (controls null), nothing
    assert g.text_drop(1, "cpu").tolist() == [False, False, True]
    assert g.control_drop(["chords", "melody"], 1, "cpu") == {
        "chords": pytest.approx([False, True, True]), "melody": pytest.approx([False, True, True])}
    rows = torch.stack([v_all, v_txt, v_null])
    assert torch.allclose(g.combine(rows), torch.tensor([[7.25, 0.5]]))


def test_jasco_formula_on_hand_made_logits():
    l_all, l_txt, l_null = torch.log(torch.tensor([[0.7, 0.2, 0.1]])), torch.zeros(1, 3), torch.ones(1, 3)
    out = Guidance(0.0, None, ["chords"], cfg_all=3.0).combine(torch.cat([l_all, l_txt, l_null]))
    assert torch.allclose(out, 3.0 * l_all - 2.0 * l_null)


def test_forms_coincide_for_one_shared_control_weight_only():
    g = torch.Generator().manual_seed(0)
    u = [torch.randn(3, 5, generator=g) for _ in range(3)]  # u_0 null, u_1 text, u_2 text + both controls
    w_text, w_c = 3.0, 2.0
    nested = nested_combine(u, [w_text, w_c])
    w_all, w_txt = nested_to_jasco(w_text, w_c)
    assert (w_all, w_txt) == (2.0, 1.0)
    assert torch.allclose(nested, jasco_combine(u[2], u[1], u[0], w_all, w_txt), atol=1e-6)
    assert not torch.allclose(nested, jasco_combine(u[2], u[1], u[0], w_text, w_c), atol=1e-3)  # unmapped
    # with two controls weighted differently, the nested form has a branch JASCO's lacks
    four = [*u, torch.randn(3, 5, generator=g)]
    assert not torch.allclose(nested_combine(four, [w_text, 1.0, 2.0]),
                              jasco_combine(four[3], four[1], four[0], *nested_to_jasco(w_text, 2.0)), atol=1e-3)


def test_nested_and_jasco_are_exclusive_and_no_control_is_single_source():
    with pytest.raises(ValueError, match="exclusive"):
        Guidance(3.0, {"chords": 2.0}, ["chords"], cfg_all=1.0)
    g = Guidance(1.0, None, [], cfg_all=2.0)
    assert g.mode == "single" and g.weights == [3.0]


def _controls(b=2):
    gen = torch.Generator().manual_seed(1)
    return {"chords": torch.randint(0, 193, (b, T), generator=gen), "melody": torch.randint(0, 54, (b, T), generator=gen)}


def test_fm_velocity_and_ar_tokens_match_across_forms_under_the_mapping(text):
    torch.manual_seed(0)
    fm = build_model("fm", preset="tiny", text_dim=16, latent_dim=D, controls=CONTROLS).eval()
    ctrl, x, t = _controls(), torch.randn(2, T, D), torch.tensor(0.4)
    w_all, w_txt = nested_to_jasco(3.0, 2.0)
    nested = fm.guided_field(*text, T, ctrl, cfg=3.0, control_cfg={"chords": 2.0, "melody": 2.0})(x, t)
    jasco = fm.guided_field(*text, T, ctrl, cfg=w_txt, cfg_all=w_all)(x, t)
    assert torch.allclose(nested, jasco, atol=1e-5)
    assert not torch.allclose(jasco, fm.guided_field(*text, T, ctrl, cfg=3.0)(x, t), atol=1e-3)
    torch.manual_seed(0)
    ar = build_model("ar", preset="tiny", text_dim=16, n_codebooks=K, codebook_size=CARD, controls=CONTROLS).eval()
    a = ar.generate(*text, T, ctrl, top_k=1, cfg=3.0, control_cfg={"chords": 2.0, "melody": 2.0})
    b = ar.generate(*text, T, ctrl, top_k=1, cfg=w_txt, cfg_all=w_all)
    assert torch.equal(a, b)
