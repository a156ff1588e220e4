import pytest
import torch

from evitdeploy.models import MODELS, build_model, create_model, get_spec
from evitdeploy.models.attention import LiteMLA, token_first_attention
from timm_oracle import import_timm

# timm's parameter counts for its efficientvit_* classifiers (1000 classes).
TIMM_PARAMS_M = {"b0": 3.41, "b1": 9.10, "b2": 24.33, "b3": 48.65, "l1": 52.65, "l2": 63.71, "l3": 246.04}


@pytest.mark.parametrize("family", TIMM_PARAMS_M)
def test_classifier_parameter_count_equals_timm(family):
    with torch.device("meta"):
        model = create_model(get_spec(f"efficientvit_{family}"))
    params = sum(p.numel() for p in model.parameters()) / 1e6
    assert round(params, 2) == TIMM_PARAMS_M[family]


def _randomize_norms(model: torch.nn.Module, seed: int = 0) -> None:
    """Non-trivial BatchNorm statistics, so a wrong layer order cannot hide behind identity norms."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)


@pytest.mark.parametrize("family", ["b0", "b1", "l1"])
def test_outputs_match_timm_with_the_same_weights(family):
    timm_models = import_timm()
    if timm_models is None:
        pytest.skip("timm is not installed (pip install 'evitdeploy[test]'); it is only a test oracle")
    ours = create_model(get_spec(f"efficientvit_{family}"), seed=3)
    _randomize_norms(ours)
    theirs = getattr(timm_models, f"efficientvit_{family}")().eval()
    theirs.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(2, 3, 160, 160, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = theirs(x), ours(x)
    assert torch.allclose(got, expected, atol=1e-5, rtol=0), (got - expected).abs().max()


def test_every_registered_model_builds_and_gives_its_declared_output_shape():
    for name, entry in MODELS.items():
        spec = entry.spec
        height, width = (spec.height, spec.width) if spec.promptable else (128, 256)  # SAM: one square size
        with torch.device("meta"):
            model = create_model(spec)
            out = model(torch.zeros(2, 3, height, width))
        assert tuple(out.shape) == spec.output_shape(2, height, width), name


@pytest.mark.fast
def test_channel_first_attention_equals_the_textbook_formulation():
    model, spec = build_model(get_spec("efficientvit_seg_b0_cityscapes").with_input(1, 128, 256))
    _randomize_norms(model)
    x = torch.randn(1, 3, 128, 256)
    with torch.no_grad():
        fast = model(x)
        model.set_formulation("textbook")
        textbook = model(x)
    assert torch.allclose(fast, textbook, atol=1e-5), (fast - textbook).abs().max()


@pytest.mark.fast
def test_attention_normalizer_runs_in_float32_when_inputs_are_half():
    # k^T v over 4096 tokens of magnitude 30 reaches ~3.7e6: past FP16's 65504.
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.rand(1, 2, 8, 4096, generator=g) * 30 for _ in range(3))
    attn = LiteMLA(16, 16, head_dim=8, norm=None)
    expected = token_first_attention(q, k, v, attn.eps)
    naive_half = token_first_attention(q.half(), k.half(), v.half(), attn.eps)
    assert not torch.isfinite(naive_half).all()  # what an unprotected FP16 graph does
    got = attn._attend(q.half(), k.half(), v.half())
    assert got.dtype == torch.float16
    assert torch.isfinite(got).all()
    assert torch.allclose(got.float(), expected, rtol=2e-3, atol=1e-2)


@pytest.mark.fast
def test_checkpoint_eps_is_part_of_the_model_identity():
    model, spec = build_model(get_spec("efficientvit_b0"), attention_eps=1e-15)
    assert spec.attention_eps == 1e-15
    assert all(m.eps == 1e-15 for m in model.modules() if isinstance(m, LiteMLA))


@pytest.mark.fast
@pytest.mark.parametrize("factor", [2, 4])
def test_conv_bicubic_upsample_equals_interpolate(factor):
    from evitdeploy.models.layers import BicubicUpsample

    x = torch.randn(2, 5, 7, 9, generator=torch.Generator().manual_seed(factor))
    up = BicubicUpsample(5, factor)
    got = up(x)
    up.formulation = "interpolate"
    expected = up(x)
    assert got.shape == (2, 5, 7 * factor, 9 * factor)
    assert torch.allclose(got, expected, atol=1e-5), (got - expected).abs().max()
