import os
import re
from dataclasses import replace

import pytest
import torch
from safetensors.torch import save_file

from evitdeploy.errors import UserError
from evitdeploy.models import build_model, create_model, get_spec
from evitdeploy.models.checkpoint import read_state_dict


def _reference_key(key: str, series: str) -> str:
    """Our (= timm's) key -> the reference repository's key, written from the reference layout:
    B: backbone.input_stem.op_list.{0: conv, 1..: res blocks}, backbone.stages.{0..3}.op_list.{j};
    L: backbone.stages.0 is the stem, stages 1..4 follow; ClsHead is op_list [conv, pool,
    linear+LN, linear]; SegHead is a DAGBlock of input_ops / middle / output_ops OpSequentials."""
    if m := re.match(r"stem\.in_conv\.(.*)", key):
        prefix = "backbone.input_stem.op_list.0." if series == "b" else "backbone.stages.0.op_list.0."
        return prefix + m[1]
    if m := re.match(r"stem\.res(\d+)\.(.*)", key):
        prefix = "backbone.input_stem" if series == "b" else "backbone.stages.0"
        return f"{prefix}.op_list.{int(m[1]) + 1}.{m[2]}"
    if m := re.match(r"stages\.(\d+)\.blocks\.(\d+)\.(.*)", key):
        stage = int(m[1]) + (0 if series == "b" else 1)
        return f"backbone.stages.{stage}.op_list.{m[2]}.{m[3]}"
    table = {
        "head.in_conv.": "head.op_list.0.",
        "head.classifier.0.": "head.op_list.2.linear.",
        "head.classifier.1.": "head.op_list.2.norm.",
        "head.classifier.4.": "head.op_list.3.linear.",
        "head.final_expand.": "head.output_ops.0.op_list.0.",
    }
    for ours, ref in table.items():
        if key.startswith(ours):
            return ref + key[len(ours) :]
    if m := re.match(r"head\.input_ops\.(\d+)\.(.*)", key):
        return f"head.input_ops.{m[1]}.{m[2]}" if m[1] == "2" else f"head.input_ops.{m[1]}.op_list.0.{m[2]}"
    if m := re.match(r"head\.middle\.(\d+)\.(.*)", key):
        return f"head.middle.op_list.{m[1]}.{m[2]}"
    return key


def _reference_state(model, series: str, seg_expand: bool = False) -> dict:
    state = {}
    for key, value in model.state_dict().items():
        if key.startswith("head.classifier.") and key.split(".")[2] in ("conv", "norm"):
            ref = ("head.output_ops.0.op_list.1." if seg_expand else "head.output_ops.0.op_list.0.") + key[len("head.classifier.") :]
        else:
            ref = _reference_key(key, series)
        state[ref] = value
    return state


def _outputs_equal(a, b, shape=(1, 3, 128, 128)) -> bool:
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return torch.equal(a(x), b(x))


@pytest.mark.parametrize(
    "name,series,known_keys",
    [
        (
            "efficientvit_b1",
            "b",
            ["backbone.input_stem.op_list.0.conv.weight", "backbone.stages.2.op_list.1.context_module.main.qkv.conv.weight", "head.op_list.3.linear.weight"],
        ),
        (
            "efficientvit_l1",
            "l",
            ["backbone.stages.0.op_list.0.conv.weight", "backbone.stages.4.op_list.1.context_module.main.aggreg.0.0.weight", "head.op_list.2.norm.weight"],
        ),
        (
            "efficientvit_seg_b1_cityscapes",
            "b",
            [
                "head.input_ops.0.op_list.0.conv.weight",
                "head.input_ops.2.conv.weight",
                "head.middle.op_list.0.main.inverted_conv.conv.weight",
                "head.output_ops.0.op_list.1.conv.bias",
            ],
        ),
    ],
)
def test_reference_layout_checkpoint_loads_and_sets_the_reference_eps(tmp_path, name, series, known_keys):
    source = create_model(get_spec(name), seed=7)
    state = _reference_state(source, series, seg_expand="cityscapes" in name and series == "b")
    for key in known_keys:  # names as the reference repository writes them
        assert key in state, key
    path = tmp_path / "ref.pt"
    torch.save({"state_dict": state}, path)
    model, spec = build_model(get_spec(name), checkpoint=path)
    assert spec.attention_eps == 1e-15
    source.set_attention(eps=1e-15)
    assert _outputs_equal(model, source)


@pytest.mark.parametrize("wrap", ["flat", "state_dict", "model", "ddp"])
def test_timm_layout_pt_loads_in_any_common_wrapping(tmp_path, wrap):
    source = create_model(get_spec("efficientvit_b0"), seed=5)
    state = source.state_dict()
    obj = {
        "flat": state,
        "state_dict": {"state_dict": state, "epoch": 3},
        "model": {"model": state},
        "ddp": {f"module.{k}": v for k, v in state.items()},
    }[wrap]
    torch.save(obj, tmp_path / "w.pth")
    model, spec = build_model(get_spec("efficientvit_b0"), checkpoint=tmp_path / "w.pth")
    assert spec.attention_eps == 1e-5
    assert _outputs_equal(model, source)


def test_safetensors_checkpoint_loads(tmp_path):
    source = create_model(get_spec("efficientvit_b0"), seed=9)
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(tmp_path / "w.safetensors"))
    model, _ = build_model(get_spec("efficientvit_b0"), checkpoint=tmp_path / "w.safetensors")
    assert _outputs_equal(model, source)


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ.get('EVIT_MARKER', '/tmp/evit-pwned')}",))


@pytest.mark.fast
def test_arbitrary_pickles_are_refused_and_never_executed(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("EVIT_MARKER", str(marker))
    state = create_model(get_spec("efficientvit_b0")).state_dict()
    torch.save({"state_dict": state, "payload": _Payload()}, tmp_path / "evil.pt")
    with pytest.raises(UserError) as info:
        read_state_dict(tmp_path / "evil.pt")
    assert "arbitrary Python objects" in info.value.message
    assert not marker.exists()


@pytest.mark.fast
@pytest.mark.parametrize("damage", ["truncated", "empty", "garbage", "missing"])
def test_damaged_checkpoints_get_a_clear_error(tmp_path, damage):
    good = tmp_path / "good.pt"
    torch.save(create_model(get_spec("efficientvit_b0")).state_dict(), good)
    bad = tmp_path / "bad.pt"
    if damage == "truncated":
        bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif damage == "empty":
        bad.write_bytes(b"")
    elif damage == "garbage":
        bad.write_bytes(os.urandom(4096))
    with pytest.raises(UserError) as info:
        read_state_dict(bad)
    expected = {"truncated": "corrupt or truncated", "empty": "is empty", "garbage": "corrupt or truncated", "missing": "not found"}
    assert expected[damage] in info.value.message


def test_a_checkpoint_of_another_model_is_named(tmp_path):
    torch.save(create_model(get_spec("efficientvit_b1")).state_dict(), tmp_path / "b1.pt")
    with pytest.raises(UserError) as info:
        build_model(get_spec("efficientvit_b0"), checkpoint=tmp_path / "b1.pt")
    assert "does not fit efficientvit_b0" in info.value.message
    assert "look like efficientvit_b1" in info.value.message


def test_a_fine_tuned_checkpoint_loads_with_its_own_class_count(tmp_path):
    source = create_model(replace(get_spec("efficientvit_b0"), num_classes=10), seed=3)
    torch.save(source.state_dict(), tmp_path / "b0_10.pt")
    model, spec = build_model(get_spec("efficientvit_b0"), checkpoint=tmp_path / "b0_10.pt")
    assert spec.num_classes == 10
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 10)
    assert _outputs_equal(model, source)


@pytest.mark.fast
def test_a_fine_tuned_segmenter_loads_with_its_own_class_count(tmp_path):
    seg = get_spec("efficientvit_seg_b0_cityscapes")
    source = create_model(replace(seg, num_classes=11), seed=3)
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(tmp_path / "seg11.safetensors"))
    model, spec = build_model(seg, checkpoint=tmp_path / "seg11.safetensors")
    assert spec.num_classes == 11 and spec.output_shape(1, 128, 128) == (1, 11, 16, 16)
    assert _outputs_equal(model, source)


def test_another_architecture_with_another_class_count_still_fails_clearly(tmp_path):
    torch.save(create_model(replace(get_spec("efficientvit_b1"), num_classes=10)).state_dict(), tmp_path / "b1_10.pt")
    with pytest.raises(UserError) as info:
        build_model(get_spec("efficientvit_b0"), checkpoint=tmp_path / "b1_10.pt")
    assert "does not fit efficientvit_b0" in info.value.message
    assert "another model" in info.value.message


@pytest.mark.parametrize("name", ["w.bin", "w.pt", "w.pth"])
def test_a_safetensors_file_loads_whatever_its_suffix(tmp_path, name):
    """The format is decided by the content (safetensors: 8-byte header length, then '{')."""
    source = create_model(get_spec("efficientvit_b0"), seed=9)
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(tmp_path / name))
    model, _ = build_model(get_spec("efficientvit_b0"), checkpoint=tmp_path / name)
    assert _outputs_equal(model, source)


@pytest.mark.fast
def test_a_torch_file_named_safetensors_loads_too(tmp_path):
    source = create_model(get_spec("efficientvit_b0"), seed=4)
    torch.save(source.state_dict(), tmp_path / "w.safetensors")
    model, _ = build_model(get_spec("efficientvit_b0"), checkpoint=tmp_path / "w.safetensors")
    assert _outputs_equal(model, source)


@pytest.mark.fast
def test_a_garbage_checkpoint_says_what_is_wrong_without_a_cut_word(tmp_path):
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"\x80\x02" + bytes(range(256)) * 16)
    with pytest.raises(UserError) as info:
        read_state_dict(bad)
    message = info.value.message
    assert "corrupt or truncated" in message
    assert "Re-running" not in message and "weights_only` set to `False" not in message  # not advice to run untrusted code
    assert "Unsupported operand" in message and "`torch.)" not in message, message  # the part that matters, whole


@pytest.mark.fast
def test_long_backend_messages_are_cut_at_a_word_with_an_ellipsis():
    from evitdeploy.errors import first_line

    text = "Weights only load failed. In PyTorch 2.6, we changed the default value of the `weights_only` argument"
    cut = first_line(ValueError(text), limit=60)
    assert cut.endswith("…") and len(cut) <= 60
    assert text.startswith(cut[:-1].rstrip()) and text[len(cut[:-1].rstrip())] == " "  # a whole word before the ellipsis
    assert first_line(ValueError("short message")) == "short message"
    assert first_line(ValueError("x" * 300), limit=50) == "x" * 49 + "…"  # one long word: cut anyway


@pytest.mark.fast
def test_a_folder_given_as_checkpoint_says_it_is_a_folder(tmp_path):
    (tmp_path / "weights").mkdir()
    with pytest.raises(UserError) as info:
        read_state_dict(tmp_path / "weights")
    assert "is a folder" in info.value.message and "not found" not in info.value.message
    assert "weights file" in info.value.hint
