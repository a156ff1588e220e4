"""TensorRT without TensorRT: the plan -> layer precisions, layer names, recipes, shapes, the QDQ
scheme, and every TensorRT name the code uses checked against the tensorrt-stubs API listing.
Tests that need TensorRT and a GPU carry the `tensorrt`/`gpu` markers and skip here."""

from __future__ import annotations

import ast
import json
import re
import shlex
import subprocess
from importlib import metadata
from pathlib import Path

import pytest

from helpers import assert_clean_error, on_device, rewrite_manifest
from evitdeploy.backends.tensorrt import device as trt_device
from evitdeploy.backends.tensorrt import export as trt_exporter
from evitdeploy.backends.tensorrt import runtime as trt_runtime
from evitdeploy.backends.tensorrt.device import STRONG, WEAK, node_of_layer
from evitdeploy.backends.tensorrt.plan import build_script, fp32_nodes, shapes, trtexec_command
from evitdeploy.models import get_spec
from evitdeploy.profiles import load_profile
from evitdeploy.requests import BenchRequest, ExportRequest


@pytest.mark.fast
def test_layers_find_their_onnx_node():
    nodes = ["/stages/stages.2/Conv", "/stages/stages.2/Conv_1", "/head/MatMul"]
    assert node_of_layer("/head/MatMul", nodes) == "/head/MatMul"
    assert node_of_layer("/head/MatMul_output_0", nodes) == "/head/MatMul"  # a node split into several layers
    assert node_of_layer("/stages/stages.2/Conv_1", nodes) == "/stages/stages.2/Conv_1"  # exact beats prefix
    assert node_of_layer("/stages/stages.2/Conv_10", nodes) == "/stages/stages.2/Conv"  # "Conv_1" + "0" is no boundary
    assert node_of_layer("(Unnamed Layer* 12) [Constant]", nodes) is None


@pytest.fixture(scope="module")
def fp16_plan(tmp_path_factory):
    """The real FP16 plan of B0 at 64x64 (ranges on photos)."""
    from evitdeploy.precision.options import PrecisionOptions
    from evitdeploy.graph import write_graph
    from evitdeploy.precision.pipeline import make_plan
    from evitdeploy.models import build_model

    folder = tmp_path_factory.mktemp("trt")
    model, spec = build_model(get_spec("efficientvit_b0").with_input(1, 64, 64), None, 0, None)
    write_graph(model, spec, folder / "fp32.onnx", 17, True)
    return make_plan(folder / "fp32.onnx", spec, "fp16", PrecisionOptions(calib_count=8)).plan, spec


def test_the_plan_pins_its_fp32_nodes_as_layers(fp16_plan):
    plan, _ = fp16_plan
    pinned = fp32_nodes(plan)
    attention = [d.node for d in plan.decisions if d.precision == "fp32" and d.module.endswith("context_module.main") and d.op == "MatMul"]
    assert attention and set(attention) <= set(pinned)
    layers = [d.node for d in plan.decisions] + [f"{pinned[0]}_output_0", "(Unnamed Layer* 3) [Constant]"]
    assert set(trt_device.pinned_layers(layers, plan.to_dict())) == set(pinned) | {f"{pinned[0]}_output_0"}


def test_trtexec_recipe_is_exact(fp16_plan):
    """Strongly typed (TensorRT >= 10, the default): the graph's types are the plan, no precision
    flag. Weakly typed (TensorRT < 10): the flags, and the plan's FP32 nodes as layer precisions."""
    plan, spec = fp16_plan
    command = trtexec_command(spec, "fp16", plan, shapes(spec))
    assert command[:2] == ["trtexec", "--onnx=model.onnx"] and "--stronglyTyped" in command
    assert not any(c.startswith(("--fp16", "--int8", "--precisionConstraints", "--layerPrecisions")) for c in command)
    assert "--minShapes=image:1x3x64x64" in command and "--maxShapes=image:1x3x64x64" in command
    assert command[-3:] == ["--separateProfileRun", "--iterations=100", "--duration=0"]  # how the published figures were timed
    weak = trtexec_command(spec, "fp16", plan, shapes(spec), mode=WEAK)
    assert "--fp16" in weak and "--int8" not in weak and "--precisionConstraints=obey" in weak and "--stronglyTyped" not in weak
    layer_flag = next(c for c in weak if c.startswith("--layerPrecisions="))
    assert layer_flag.split("=", 1)[1].split(",") == [f"{n}:fp32" for n in fp32_nodes(plan)]
    assert f"--layerOutputTypes={layer_flag.split('=', 1)[1]}" in weak
    assert "--int8" in trtexec_command(spec, "int8", plan, shapes(spec), mode=WEAK)
    plain = trtexec_command(spec, "fp32", None, shapes(spec), mode=WEAK)
    assert not any(c.startswith(("--fp16", "--precisionConstraints", "--layerPrecisions")) for c in plain)
    dla = trtexec_command(spec, "fp16", plan, shapes(spec), dla_core=1)
    assert {"--useDLACore=1", "--allowGPUFallback", "--exportLayerInfo=model.engine.layers.json"} <= set(dla)


def test_build_script_is_valid_shell_quoting_the_names(fp16_plan, tmp_path):
    plan, spec = fp16_plan
    command = trtexec_command(spec, "fp16", plan, shapes(spec))
    script = tmp_path / "build_engine.sh"
    script.write_text(build_script(command, "evitdeploy build ."))
    assert subprocess.run(["sh", "-n", str(script)]).returncode == 0
    body = script.read_text()
    assert "#   evitdeploy build ." in body
    assert shlex.split(body.split('cd "$(dirname "$0")"\n', 1)[1].replace("\\\n", " ")) == command


@pytest.mark.fast
def test_profile_shapes_come_from_the_profile():
    spec = get_spec("efficientvit_b0")
    a100 = load_profile("a100")
    assert shapes(spec, a100) == {"min": (1, 3, 224, 224), "opt": (1, 3, 224, 224), "max": (64, 3, 224, 224)}
    assert shapes(spec, load_profile("jetson-orin-nano")) == {k: (1, 3, 224, 224) for k in ("min", "opt", "max")}
    from evitdeploy.errors import UserError

    with pytest.raises(UserError, match="outside the profile's range"):
        shapes(spec.with_input(128, None, None), a100)


@pytest.mark.parametrize("mode", [STRONG, WEAK])
def test_int8_onnx_for_tensorrt_is_symmetric_with_zero_points_0(fp16_plan, tmp_path, mode):
    """Both typings: the TensorRT scheme and placement. Strongly typed, the float remainder is FP16
    and each convolution's DequantizeLinear writes FP16 straight into it (FP16 scales, no Cast)."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    from evitdeploy.backends.options import ExportOptions

    from evitdeploy.precision.options import PrecisionOptions
    from evitdeploy.models import build_model

    _, spec = fp16_plan
    model, spec = build_model(spec, None, 0, None)
    options = ExportOptions(output=tmp_path / "out", precision="int8", reduced=PrecisionOptions(calib_count=8, search_budget=0))
    plan, sections = trt_exporter.prepare_onnx(model, spec, "int8", tmp_path, tmp_path, options, mode=mode)
    graph = onnx.load(str(tmp_path / "model.onnx")).graph
    initializers = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    zero_points = [initializers[n.input[2]] for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 2]
    assert zero_points and not any(z.any() for z in zero_points)  # symmetric: every zero point is 0
    activations = [initializers[n.input[2]] for n in graph.node if n.op_type == "QuantizeLinear"]
    assert activations and all(z.dtype == np.int8 for z in activations)  # signed int8, not ORT's uint8
    assert sections["precision_plan"]["scheme"].startswith("tensorrt")
    # placement (NVIDIA's recommendation): every Conv reads a quantized input and quantized weights;
    # no Q/DQ sits between a Conv and its HardSwish or residual Add, which TensorRT fuses into it
    producer = {o: n for n in graph.node for o in n.output}
    readers: dict = {}
    for n in graph.node:
        for name in n.input:
            readers.setdefault(name, []).append(n)
    convs = [n for n in graph.node if n.op_type == "Conv"]
    assert all(producer[n.input[0]].op_type == "DequantizeLinear" and producer[n.input[1]].op_type == "DequantizeLinear" for n in convs)
    after = [[r.op_type for r in readers.get(n.output[0], [])] for n in convs]
    assert ["HardSwish"] in after and ["Add"] in after
    for n in convs:
        for q in (r for r in readers.get(n.output[0], []) if r.op_type == "QuantizeLinear"):
            dq_readers = [r.op_type for d in readers[q.output[0]] for r in readers.get(d.output[0], [])]
            assert "Conv" in dq_readers, dq_readers  # (an Add beside it reads that tensor as its skip input)
    conversion = sections["precision_plan"]["conversion"]
    assert conversion["fusable_conv_epilogues"] > 0 and conversion["integer_hardswish"] == 0
    scales = {initializers[producer[n.input[i]].input[1]].dtype for n in convs for i in (0, 1)}
    assert scales == ({np.dtype(np.float16)} if mode == STRONG else {np.dtype(np.float32)})
    if mode == STRONG:
        assert_typed_graph(tmp_path / "model.onnx", plan)


def assert_typed_graph(path, plan) -> None:
    """A strongly typed graph: the full checker and strict shape inference pass (consistent types),
    no Cast round trip, float32 I/O, and every node the plan keeps FP32 computes in FP32 while
    the others that write floats write FP16."""
    import onnx
    from onnx import TensorProto

    from evitdeploy.precision.fp16 import cancelling_casts

    onnx.checker.check_model(str(path), full_check=True)
    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)), strict_mode=True)
    assert cancelling_casts(model) == []
    graph = model.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*graph.value_info, *graph.input, *graph.output]}
    assert {types[v.name] for v in [*graph.input, *graph.output]} == {TensorProto.FLOAT}
    fp32 = set(plan.nodes_in("fp32"))
    floats = {TensorProto.FLOAT, TensorProto.FLOAT16}
    for node in graph.node:
        written = {types.get(o) for o in node.output} & floats
        if node.name in fp32:
            assert written <= {TensorProto.FLOAT}, node.name
        elif node.op_type not in ("Cast", "Identity") and node.name in {d.node for d in plan.decisions}:
            assert written <= {TensorProto.FLOAT16}, (node.name, node.op_type)


# --- the TensorRT API names, checked against tensorrt-stubs -------------------------------------


def stubs_listing() -> dict[str, set[str]]:
    """A tolerant scan of tensorrt-stubs' .pyi files (mypy cannot parse them as shipped):
    class -> member names, and "" -> module-level names."""
    try:
        files = [Path(str(f.locate())) for f in metadata.files("tensorrt-stubs") if str(f).endswith(".pyi")]
    except metadata.PackageNotFoundError:
        pytest.skip("tensorrt-stubs is not installed: pip install --no-deps tensorrt-stubs")
    listing: dict[str, set[str]] = {"": set()}
    for file in files:
        current = ""
        for line in file.read_text().splitlines():
            top = re.match(r"^class (\w+)", line)
            if top:
                current = top.group(1)
                listing[""].add(current)
                listing.setdefault(current, set())
                continue
            if re.match(r"^(def |\w+\s*[:=])", line):
                current = ""
                name = re.match(r"^(?:def )?(\w+)", line)
                listing[""].add(name.group(1))
                continue
            member = re.match(r"^    (?:def )?(\w+)\s*[:(=]", line) or re.search(r":ivar (\w+):", line)
            if member and current:
                listing[current].add(member.group(1))
    return listing


def missing_names(names, listing) -> list[str]:
    missing = []
    for name in names:
        owner, _, member = name.rpartition(".")
        if not owner:
            if name not in listing[""]:
                missing.append(name)
        elif member not in listing.get(owner, set()):
            missing.append(name)
    return missing


# TensorRT 11.4's API: the names its Python bindings wheel (1.3 MB, pip-downloadable) really exports.
# The module cannot import without TensorRT's libraries, so it is imported against empty stand-ins
# for the 11 symbols it links (TensorRT's C++ API is virtual interfaces behind these factories).
TRT11_BINDINGS = "tensorrt-cu12-bindings==11.4.0.106"
TRT11_LINKED = """
void* createInferBuilder_INTERNAL(void* a, int b) { return 0; }
void* createInferRefitter_INTERNAL(void* a, void* b, int c) { return 0; }
void* createInferRuntime_INTERNAL(void* a, int b) { return 0; }
void* createNvOnnxParserRefitter_INTERNAL(void* a, void* b, int c) { return 0; }
void* createNvOnnxParser_INTERNAL(void* a, void* b, int c) { return 0; }
void* getBuilderPluginRegistry(int a) { return 0; }
int getNvOnnxParserVersion(void) { return 0; }
void* getPluginRegistry(void) { return 0; }
int initLibNvInferPlugins(void* a, const char* b) { return 0; }
"""
LIST_NAMES = """
import json, tensorrt_bindings as trt
listing = {"": sorted(dir(trt))}
for name in dir(trt):
    if isinstance(getattr(trt, name), type):
        listing[name] = sorted(dir(getattr(trt, name)))
print(json.dumps(listing))
"""


@pytest.fixture(scope="session")
def trt11_listing(tmp_path_factory) -> dict[str, set[str]]:
    """class -> member names of TensorRT 11.4's bindings, "" -> module names. The wheel is fetched
    once into ~/.cache/evitdeploy (like the trained references); skips, saying why, where it cannot be."""
    import os
    import shutil
    import sys
    import zipfile

    cache = Path.home() / ".cache" / "evitdeploy" / "tensorrt-11.4-bindings"
    wheels = sorted(cache.glob("tensorrt_cu12_bindings-*.whl"))
    if not wheels:
        fetched = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", str(cache), TRT11_BINDINGS], capture_output=True, text=True
        )
        wheels = sorted(cache.glob("tensorrt_cu12_bindings-*.whl"))
        if not wheels:
            pytest.skip(f"cannot fetch {TRT11_BINDINGS} for this Python: {fetched.stderr.strip()[-200:]}")
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("needs a C compiler (cc) to stand in for TensorRT 11's libraries")
    folder = tmp_path_factory.mktemp("trt11")
    zipfile.ZipFile(wheels[-1]).extractall(folder / "site")
    (folder / "linked.c").write_text(TRT11_LINKED)
    for library in ("libnvinfer.so.11", "libnvonnxparser.so.11", "libnvinfer_plugin.so.11"):
        subprocess.run([compiler, "-shared", "-fPIC", f"-Wl,-soname,{library}", "-o", str(folder / library), str(folder / "linked.c")], check=True)
    env = dict(os.environ, LD_LIBRARY_PATH=str(folder), PYTHONPATH=str(folder / "site"))
    listed = subprocess.run([sys.executable, "-c", LIST_NAMES], capture_output=True, text=True, env=env, cwd=folder)
    assert listed.returncode == 0, listed.stderr[-2000:]
    return {owner: set(names) for owner, names in json.loads(listed.stdout).items()}


def names_for(version: str) -> list[str]:
    """Every TensorRT name the device module (builder, engine runner, DLA report) uses on the path
    `version` takes."""
    return sorted({*trt_device.TRT_NAMES["common"], *trt_device.TRT_NAMES[trt_device.typing_for(version)], *trt_device.TRT_NAMES["dla"]})


@pytest.mark.fast
def test_every_tensorrt_name_the_code_uses_exists_in_tensorrt_10():
    """10.x takes the strongly typed path; its API (tensorrt-stubs 10.13) also still has every name
    of the weakly typed one, the path of TensorRT < 10 (no 8.x listing is published)."""
    listing = stubs_listing()
    assert trt_device.typing_for("10.13.0") == STRONG and trt_device.typing_for("10.3.0") == STRONG
    assert missing_names(names_for("10.13.0"), listing) == []
    assert missing_names(trt_device.TRT_NAMES[WEAK], listing) == []


def test_every_tensorrt_name_the_strongly_typed_path_uses_exists_in_tensorrt_11(trt11_listing):
    assert trt11_listing[""] >= {"Builder", "OnnxParser", "Runtime", "__version__"}  # the real module, not an empty one
    assert trt_device.typing_for("11.4.0.106") == STRONG
    assert missing_names(names_for("11.4.0.106"), trt11_listing) == []


def test_the_11_check_bites_the_weakly_typed_names_it_removed(trt11_listing):
    """The names the weakly typed path (and the builder before this one) set are gone in 11.4: the
    same check fails on them, so a removed name on the 11 path would fail the test above."""
    assert set(missing_names(trt_device.TRT_NAMES[WEAK], trt11_listing)) == {
        "NetworkDefinitionCreationFlag.EXPLICIT_BATCH",
        "BuilderFlag.FP16",
        "BuilderFlag.INT8",
        "BuilderFlag.OBEY_PRECISION_CONSTRAINTS",
        "ILayer.precision",
        "ILayer.set_output_type",
    }
    assert missing_names(["BuilderFlag.FP61", "Builderr"], trt11_listing) == ["BuilderFlag.FP61", "Builderr"]


@pytest.mark.fast
def test_the_stub_check_catches_a_misspelled_name():
    assert missing_names(["BuilderFlag.FP61", "Builder.create_netwrok", "Builderr"], stubs_listing()) == [
        "BuilderFlag.FP61",
        "Builder.create_netwrok",
        "Builderr",
    ]


@pytest.mark.fast
def test_a_tensorrt_refuses_a_graph_typed_for_another():
    assert trt_device.typing_for("8.6.2") == WEAK and trt_device.typing_refusal(STRONG, "8.6.2")[0].startswith("this bundle's ONNX is strongly typed")
    assert "JetPack 5 profile" in trt_device.typing_refusal(STRONG, "8.6.2")[1]
    assert "no longer has" in trt_device.typing_refusal(WEAK, "11.4.0")[0]
    assert trt_device.typing_refusal(WEAK, "10.3.0") is None and trt_device.typing_refusal(STRONG, "11.4.0") is None


OBJECTS = {  # the variables the TensorRT modules hold TensorRT objects in, and their classes
    "builder": "Builder",
    "network": "INetworkDefinition",
    "parser": "OnnxParser",
    "config": "IBuilderConfig",
    "profile": "IOptimizationProfile",
    "layer": "ILayer",
    "runtime": "Runtime",
    "engine": "ICudaEngine",
    "context": "IExecutionContext",
    "inspector": "EngineInspector",
}


def used_names(module) -> set[str]:
    """`trt.X.Y` chains, and attributes used on the variables (or self.attributes) in OBJECTS."""
    tree = ast.parse(Path(module.__file__).read_text())
    used = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        chain, base = [node.attr], node.value
        while isinstance(base, ast.Attribute):
            chain.insert(0, base.attr)
            base = base.value
        if isinstance(base, ast.Name) and base.id == "trt":
            used.add(".".join(chain[-2:]) if len(chain) > 1 else chain[0])
        elif isinstance(base, ast.Name) and base.id in OBJECTS and len(chain) == 1:
            used.add(f"{OBJECTS[base.id]}.{chain[0]}")
        elif isinstance(base, ast.Name) and base.id == "self" and len(chain) == 2 and chain[0] in ("engine", "context", "runtime"):
            used.add(f"{OBJECTS[chain[0]]}.{chain[1]}")
    return used


@pytest.mark.fast
def test_trt_names_lists_every_name_the_device_module_touches():
    """Nothing reaches the TensorRT API unchecked: every name used is in the device module's
    TRT_NAMES, and the exporter and host runner touch TensorRT only through it."""
    from evitdeploy.backends.tensorrt import runner as trt_runner

    listed = {name for names in trt_device.TRT_NAMES.values() for name in names}
    used = used_names(trt_device)
    assert used and used <= listed, sorted(used - listed)
    assert used_names(trt_exporter) <= {"__version__"} and used_names(trt_runner) <= {"__version__"}


@pytest.mark.fast
def test_an_engine_from_another_tensorrt_or_gpu_is_refused():
    from evitdeploy.errors import UserError
    from evitdeploy.backends.tensorrt.runner import check_engine_host

    manifest = {"toolchain": {"tensorrt": "10.3.0"}, "export": {"gpu": "Orin"}}
    check_engine_host(manifest, "10.3.0", "Orin")
    with pytest.raises(UserError, match="built with TensorRT 10.3.0; this host has 10.13.0"):
        check_engine_host(manifest, "10.13.0", "Orin")
    with pytest.raises(UserError, match="built on Orin; this host has NVIDIA H100"):
        check_engine_host(manifest, "10.3.0", "NVIDIA H100")


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_jetson_deploy_without_tensorrt_writes_the_onnx_plan_and_recipe(precision, tmp_path, cli, digits_checkpoint_path):
    """The trained digits classifier (INT8 parity of the TensorRT-scheme QDQ ONNX on ONNX Runtime)."""
    import numpy as np

    from evitdeploy.models import trained
    from helpers import on_device

    np.savez(tmp_path / "calib.npz", image=trained.digits_images("train")[0][:32])
    np.savez(tmp_path / "check.npz", image=trained.digits_images("test")[0][:8])
    folder = tmp_path / "jetson"
    result = cli(
        "deploy",
        "--profile",
        "jetson-orin-nano",
        "-m",
        "efficientvit_b0",
        "-c",
        digits_checkpoint_path,
        "-p",
        precision,
        "--height",
        "64",
        "--width",
        "64",
        "--calib",
        tmp_path / "calib.npz",
        "--data",
        tmp_path / "check.npz",
        "--search-budget",
        "1",
        "-o",
        folder,
        "--json",
    )
    assert result.exit_code == 0, result.stdout
    import json

    summary = json.loads(result.stdout)
    assert summary["target"] == "trt" and summary["check"]["passed"] and summary["latency"] is None
    assert "TensorRT engines are built and timed on the device" in summary["budget"]["host"]
    assert {"model.onnx", "precision_plan.json", "build_engine.sh", "reference.npz", "verify.py"} <= {p.name for p in folder.iterdir()}
    script = (folder / "build_engine.sh").read_text()
    assert "--stronglyTyped" in script and not any(flag in script for flag in ("--fp16", "--int8", "--precisionConstraints"))
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["export"]["typing"]["mode"] == STRONG and manifest["export"]["flags"] == {"network": ["STRONGLY_TYPED"], "builder": []}
    from evitdeploy.precision.plan import PrecisionPlan

    assert_typed_graph(folder / "model.onnx", PrecisionPlan.from_dict(json.loads((folder / "precision_plan.json").read_text())))
    storage = json.loads((folder / "manifest.json").read_text())["precision_plan"].get("fp16_storage_check")
    assert (storage is not None) == (precision == "fp16") and summary["fp16_storage_check"] == storage
    from evitdeploy.report.tables import deploy_table

    assert ("fp16 storage" in deploy_table(summary).columns[0]._cells) == (precision == "fp16")
    if storage:
        assert storage["planned"]["nonfinite"] == 0 and storage["planned"]["cosine_min"] > 0.999
    assert subprocess.run(["sh", "-n", str(folder / "build_engine.sh")]).returncode == 0
    device = on_device(folder / "verify.py")
    assert device.returncode == 3 and "TensorRT is not installed here" in device.stderr and "JetPack" in device.stderr
    if not trt_runtime.hasattr_builder():
        assert_clean_error(cli("build", folder), 3, "TensorRT", "JetPack")


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_a_jetson_bundle_verifies_itself_with_numpy_tensorrt_and_libcudart_only(precision, tmp_path, cli, digits_checkpoint_path, fake_cudart):
    """verify.py on a "Jetson": torch, evitdeploy and onnx blocked, TensorRT the recording stand-in
    (engines run the ONNX on ONNX Runtime), libcudart the compiled fake (host memory, real copies).
    The FP16 bundle is made with --fp16-io (float16 engine I/O, cast by the device code).
    It builds the engine from the typed graph strongly typed, checks it against reference.npz, times
    GPU compute, and caches the engine beside the bundle: a second run reuses it."""
    import numpy as np

    from evitdeploy.models import trained

    np.savez(tmp_path / "calib.npz", image=trained.digits_images("train")[0][:16])
    np.savez(tmp_path / "check.npz", image=trained.digits_images("test")[0][:4])
    folder = tmp_path / "jetson"
    args = ("--height", "64", "--width", "64", "--calib", tmp_path / "calib.npz", "--data", tmp_path / "check.npz", "--search-budget", "0")
    fp16_io = ("--fp16-io",) if precision == "fp16" else ()  # the engine then takes and gives float16: the device code casts
    result = cli(
        "deploy", "--profile", "jetson-orin-nano", "-m", "efficientvit_b0", "-c", digits_checkpoint_path, "-p", precision, *args, *fp16_io, "-o", folder
    )
    assert result.exit_code == 0, result.output
    import onnx

    io_types = {v.type.tensor_type.elem_type for v in [*onnx.load(str(folder / "model.onnx")).graph.input, *onnx.load(str(folder / "model.onnx")).graph.output]}
    assert io_types == ({onnx.TensorProto.FLOAT16} if fp16_io else {onnx.TensorProto.FLOAT})
    standin = Path(__file__).parent / "standin"
    runs = [on_device(folder / "verify.py", "--json", "--count", "5", paths=(standin,), libraries=str(fake_cudart)) for _ in range(2)]
    assert all(run.returncode == 0 for run in runs), runs[0].stderr + runs[1].stderr
    first, second = (json.loads(run.stdout) for run in runs)
    assert first["passed"] and first["parity"]["metrics"]["cosine_min"] > (0.999 if precision == "fp16" else 0.98)
    assert first["runtime"]["providers"] == ["TensorRT 10.99.0 on Stand-in GPU (strongly-typed, engine built)"]
    assert second["runtime"]["providers"] == ["TensorRT 10.99.0 on Stand-in GPU (strongly-typed, engine cached)"]
    assert first["gpu_compute"]["count"] == 5 and first["latency"]["count"] == 5
    assert "building model.engine with TensorRT 10.99.0 on Stand-in GPU" in runs[0].stderr and "building" not in runs[1].stderr
    cache = tmp_path / "jetson.engines" / "10.99.0-Stand-in-GPU"
    record = json.loads((cache / "model.engine.build.json").read_text())
    assert record["typing"] == STRONG and record["flags"] == {"network": ["STRONGLY_TYPED"], "builder": []}
    assert record["onnx_sha256"] == trt_device.hashlib.sha256((folder / "model.onnx").read_bytes()).hexdigest()
    assert not (folder / "model.engine").exists()  # the bundle is untouched: the engine lives in the cache beside it
    if precision == "fp16":  # a bundle from before typed TensorRT bundles: refused with what to do, not a KeyError
        rewrite_manifest(folder, lambda manifest: manifest["export"].pop("typing"))
        old = on_device(folder / "verify.py", paths=(standin,), libraries=str(fake_cudart))
        assert old.returncode == 3 and "deploy it again with this evitdeploy" in old.stderr and "Traceback" not in old.stderr, old.stderr


def test_tensorrt_fp16_recipe_of_the_trained_segmenter_is_checked_for_fp16_overflow(tmp_path, mosaic_checkpoint_path):
    """At 512x1024 LiteMLA's sums already pass 65504: the recipe's FP16 storage check shows plain
    FP16 overflowing and the plan (pinned as layer precisions on the device) finite."""
    import numpy as np

    from evitdeploy import api
    from evitdeploy.precision.options import PrecisionOptions
    from evitdeploy.models import trained

    photos, _ = trained.digit_mosaics(2, 512, 1024, seed=3, split="train")
    np.savez(tmp_path / "calib.npz", image=photos)
    artifact = api.export_model(
        ExportRequest(
            model="efficientvit_seg_b0_cityscapes",
            target="trt",
            precision="fp16",
            output=tmp_path / "trt",
            checkpoint=mosaic_checkpoint_path,
            height=512,
            width=1024,
            reduced=PrecisionOptions(calib=str(tmp_path / "calib.npz"), calib_count=2),
            backend_options={"engine": False},
        ),
    )
    storage = artifact.manifest["precision_plan"]["fp16_storage_check"]
    assert storage["plain"]["nonfinite"] > 0, storage
    assert storage["planned"]["nonfinite"] == 0 and storage["planned"]["cosine_min"] > 0.999, storage
    assert "--stronglyTyped" in (artifact.folder / "build_engine.sh").read_text()
    from evitdeploy.precision.plan import PrecisionPlan

    plan = PrecisionPlan.from_dict(json.loads((artifact.folder / "precision_plan.json").read_text()))
    assert plan.nodes_in("fp32")
    assert_typed_graph(artifact.folder / "model.onnx", plan)  # the islands that keep it finite are FP32 in the graph


def test_build_refuses_a_bundle_of_another_target(cli, b0_64_bundle):
    assert_clean_error(cli("build", b0_64_bundle), 2, "is a onnx bundle, not a TensorRT one")


@pytest.mark.fast
def test_absent_tensorrt_is_exit_3_with_install_guidance(cli, tmp_path):
    if trt_runtime.hasattr_builder():
        pytest.skip("TensorRT is installed here")
    result = cli("export", "-m", "efficientvit_b0", "-t", "trt", "-p", "fp16", "--height", "64", "--width", "64", "-o", tmp_path / "out")
    assert_clean_error(result, 3, "TensorRT", "JetPack", "pypi.nvidia.com")
    assert not (tmp_path / "out").exists()


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_fp16_engine_builds_with_the_plan_pinned(tmp_path):
    from evitdeploy import api

    artifact = api.export_model(
        ExportRequest(
            model="efficientvit_b0",
            target="trt",
            precision="fp16",
            output=tmp_path / "engine",
            height=64,
            width=64,
        ),
    )
    assert artifact.manifest["export"]["engine"]["pinned_fp32_layers"] > 0


def test_a100_recipe_has_a_dynamic_batch_onnx_and_range(tmp_path, cli):
    import onnx

    folder = tmp_path / "a100"
    result = cli("deploy", "--profile", "a100", "-m", "efficientvit_b0", "-p", "fp32", "--height", "64", "--width", "64", "-o", folder)
    assert result.exit_code == 0, result.stdout
    dims = onnx.load(str(folder / "model.onnx")).graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and not dims[0].dim_value  # the batch the engine's profile ranges over
    script = (folder / "build_engine.sh").read_text()
    assert "--minShapes=image:1x3x64x64" in script and "--maxShapes=image:64x3x64x64" in script


def test_build_engine_sets_each_typings_flags_and_pins_the_weak_paths_layers(fp16_plan, tmp_path, standin_tensorrt):
    """The device module's build_engine against the recording stand-in. Strongly typed: the
    STRONGLY_TYPED network flag, no precision flag, nothing pinned. Weakly typed: FP16 and "obey",
    every layer of a plan FP32 node pinned FP32 in precision and output type, nothing else touched.
    Both: the profile's shapes, the workspace, the timing cache read and rewritten; with a DLA core,
    GPU fallback and the layers that cannot run there."""
    from evitdeploy.graph import write_graph
    from evitdeploy.models import build_model

    plan, spec = fp16_plan
    model, _ = build_model(spec, None, 0, None)
    write_graph(model, spec, tmp_path / "model.onnx", 17, True)
    trt = standin_tensorrt
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"cache-in")
    named = {spec.input_name: shapes(spec)}
    engine, info = trt_device.build_engine(trt, tmp_path / "model.onnx", named, STRONG, "fp16", plan.to_dict(), workspace_mib=512, timing_cache=cache)
    strong = trt.RECORD["builds"][-1]
    assert strong["strongly_typed"] and strong["flags"] == [] and strong["pinned"] == [] and info["flags"] == {"network": ["STRONGLY_TYPED"], "builder": []}
    assert strong["workspace"] == ("WORKSPACE", 512 << 20) and strong["timing_cache_in"] == "cache-in" and cache.read_bytes() == b"cache-in+"
    assert strong["profiles"] == [{spec.input_name: {k: list(v) for k, v in shapes(spec).items()}}]

    trt_device.build_engine(trt, tmp_path / "model.onnx", named, WEAK, "fp16", plan.to_dict())
    weak = trt.RECORD["builds"][-1]
    assert not weak["strongly_typed"] and weak["flags"] == ["FP16", "OBEY_PRECISION_CONSTRAINTS"]
    layers = [name for name, _ in weak["layers"]]
    expected = {name for name in layers if node_of_layer(name, [d.node for d in plan.decisions]) in set(fp32_nodes(plan))}
    assert expected and set(weak["pinned"]) == expected
    trt_device.build_engine(trt, tmp_path / "model.onnx", named, WEAK, "fp32", plan.to_dict())
    assert trt.RECORD["builds"][-1]["flags"] == [] and trt.RECORD["builds"][-1]["pinned"] == []

    _, info = trt_device.build_engine(trt, tmp_path / "model.onnx", named, STRONG, "fp16", dla_core=1)
    dla = trt.RECORD["builds"][-1]
    assert dla["dla_core"] == 1 and dla["flags"] == ["GPU_FALLBACK"] and info["flags"]["builder"] == ["GPU_FALLBACK"]
    assert info["dla"]["gpu_fallback"] and set(info["dla"]["gpu_fallback"]) == {name for name, on_dla in dla["layers"] if not on_dla}


def test_bench_of_an_engine_adds_gpu_compute_time_from_a_separate_run(b0_artifact, monkeypatch):
    """`bench` on a TensorRT engine adds trtexec's GPU compute figure from the runner's own timed
    loop, for a backend whose descriptor says it times GPU compute. The engine runner needs a GPU;
    an ONNX Runtime runner with that method, under a descriptor with that capability, stands in."""
    from dataclasses import replace

    from evitdeploy import api
    from evitdeploy.backends import BACKENDS
    from evitdeploy.device.metrics import time_model
    from evitdeploy.report.tables import bench_table
    from evitdeploy.backends.onnxruntime.runner import OnnxRuntimeRunner

    calls = []

    class TimedOnGpu(OnnxRuntimeRunner):
        def gpu_times_ms(self, batch, warmup, count):
            calls.append((batch.shape, warmup, count))
            return time_model(lambda b: self.infer({"image": b}), batch, warmup, count)

    monkeypatch.setattr(api, "runner_for", lambda artifact, threads=None, taking_turns=False: TimedOnGpu(artifact.model_file, threads=1))
    monkeypatch.setattr(api, "get_backend", lambda name, precision=None: replace(BACKENDS[name], gpu_compute_timing=True))
    summary = api.bench_artifact(BenchRequest(path=b0_artifact, warmup=2, count=7))
    gpu = summary["results"][0]["gpu_compute"]
    assert calls == [((1, 3, 128, 128), 2, 7)] and gpu["count"] == 7 and len(gpu["latency_samples_ms"]) == 7
    rows = bench_table(summary).columns[0]._cells
    assert any(row.endswith("GPU compute") for row in rows)


def test_jetpack_and_dla_from_the_profile_reach_the_device(cli, tmp_path, standin_tensorrt, monkeypatch):
    """A Jetson profile's TensorRT range travels in the manifest and the device refuses a TensorRT
    outside it; `--option dla_core=0` on AGX Orin puts the model on DLA 0 with GPU fallback, and
    `build` reports which layers fell back (MatMul/Reshape/Transpose in the stand-in's rule)."""
    folder = tmp_path / "agx"
    result = cli(
        "deploy",
        "--profile",
        "jetson-agx-orin",
        "-m",
        "efficientvit_b0",
        "-p",
        "fp16",
        "--height",
        "64",
        "--width",
        "64",
        "--option",
        "dla_core=0",
        "--samples",
        "2",
        "-o",
        folder,
    )
    assert result.exit_code == 0, result.output
    export = json.loads((folder / "manifest.json").read_text())["export"]
    assert export["dla_core"] == 0 and export["flags"]["builder"] == ["GPU_FALLBACK"] and "--useDLACore=0" in export["trtexec"]
    assert export["tensorrt_expected"]["min"] == "10.3" and export["tensorrt_expected"]["profile"] == "jetson-agx-orin"
    built = cli("build", folder, "--count", "2", "--json")
    assert built.exit_code == 0, built.output
    dla = json.loads(built.stdout)["engines"]["model.engine"]["dla"]
    assert dla["core"] == 0 and dla["dla_subgraphs"] == 1 and dla["gpu_fallback"] and dla["gpu_layers"] == len(dla["gpu_fallback"])
    assert all(name.split("/")[-1].startswith(("MatMul", "Reshape", "Transpose")) for name in dla["gpu_fallback"])

    nano = tmp_path / "nano"
    result = cli(
        "deploy", "--profile", "jetson-orin-nano", "-m", "efficientvit_b0", "-p", "fp16", "--height", "64", "--width", "64", "--samples", "2", "-o", nano
    )
    assert result.exit_code == 0, result.output
    monkeypatch.setattr(standin_tensorrt, "__version__", "11.4.0")
    assert_clean_error(cli("build", nano), 3, "this device has TensorRT 11.4.0; the bundle was made for >= 10.3, < 11 (jetson-orin-nano)", "install JetPack 6")
