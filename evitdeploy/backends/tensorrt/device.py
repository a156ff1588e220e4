"""TensorRT on the device: a bundle carries this file as `evitdeploy_device/runtime.py`.

No evitdeploy imports, Python 3.8 syntax, numpy + TensorRT + libcudart (through ctypes) only: a
stock JetPack verifies a bundle with `python3 verify.py`, no PyTorch, no evitdeploy. A TensorRT
bundle carries the ONNX graph(s) and the precision plan, not an engine (engines are tied to the GPU
and the TensorRT version): `open_model` builds the engine here the first time and caches it beside
the bundle (`<bundle>.engines/<TensorRT version>-<GPU>/`), keyed by the ONNX's sha256 too. The
host's `evitdeploy build` and `export --target trt` call the same `build_engine`, so the engine the
device checks is built exactly as the one evitdeploy builds.

Two ways to tell TensorRT the precision (the manifest's `export.typing.mode`):
- strongly typed (TensorRT >= 10, the only one TensorRT 11 has): the ONNX graph carries the types:
  FP16 tensors except the plan's FP32 islands, Casts at their borders, and (INT8) Q/DQ with FP16
  scales; the network is created STRONGLY_TYPED and no precision flag is set.
- weakly typed (TensorRT < 10, JetPack 5): the FP32 (or Q/DQ) graph with the FP16/INT8 builder
  flags, the plan's FP32 nodes pinned as layer precisions under OBEY_PRECISION_CONSTRAINTS.
A graph typed for one path is refused by a TensorRT that lacks it, with the command that fixes it.
"""

import ctypes
import ctypes.util
import hashlib
import json
import os
import re
import tempfile
import time
from pathlib import Path

import numpy as np

TARGET = "trt"
RUNTIME = ("tensorrt", "tensorrt")
VERSION_BOUND = True  # an engine built on the making host loads only on that TensorRT version

STRONG, WEAK = "strongly-typed", "weakly-typed"
TYPINGS = (STRONG, WEAK)
FIRST_STRONG_MAJOR = 10  # from here the typed graph is the path; TensorRT 11 removed the weak flags
DEFAULT_WORKSPACE_MIB = 4096
TIMING_CACHE = "timing.cache"
ENGINE_RECORD = "build.json"
BOUNDARIES = ("_", "/", " ", ":")

# Every TensorRT name this module uses ("Class.member"), by the path that uses it; the tests check
# each path's names against each TensorRT version's API that takes the path (10.x: tensorrt-stubs;
# 11.4: the bindings wheel's own module).
TRT_NAMES = {
    "common": (
        "__version__",
        "Logger",
        "Logger.WARNING",
        "Builder",
        "Builder.create_network",
        "Builder.create_builder_config",
        "Builder.create_optimization_profile",
        "Builder.build_serialized_network",
        "OnnxParser",
        "OnnxParser.parse_from_file",
        "OnnxParser.num_errors",
        "OnnxParser.get_error",
        "INetworkDefinition.num_layers",
        "INetworkDefinition.get_layer",
        "ILayer.name",
        "IBuilderConfig.set_memory_pool_limit",
        "MemoryPoolType",
        "MemoryPoolType.WORKSPACE",
        "IBuilderConfig.add_optimization_profile",
        "IOptimizationProfile.set_shape",
        "IBuilderConfig.create_timing_cache",
        "IBuilderConfig.set_timing_cache",
        "IBuilderConfig.get_timing_cache",
        "ITimingCache.serialize",
        "Runtime",
        "Runtime.deserialize_cuda_engine",
        "ICudaEngine.create_execution_context",
        "ICudaEngine.num_io_tensors",
        "ICudaEngine.get_tensor_name",
        "ICudaEngine.get_tensor_mode",
        "ICudaEngine.get_tensor_dtype",
        "ICudaEngine.get_tensor_profile_shape",
        "TensorIOMode",
        "TensorIOMode.INPUT",
        "IExecutionContext.set_input_shape",
        "IExecutionContext.get_tensor_shape",
        "IExecutionContext.set_tensor_address",
        "IExecutionContext.execute_async_v3",
    ),
    STRONG: ("NetworkDefinitionCreationFlag", "NetworkDefinitionCreationFlag.STRONGLY_TYPED"),
    WEAK: (
        "NetworkDefinitionCreationFlag",
        "NetworkDefinitionCreationFlag.EXPLICIT_BATCH",
        "BuilderFlag",
        "BuilderFlag.FP16",
        "BuilderFlag.INT8",
        "BuilderFlag.OBEY_PRECISION_CONSTRAINTS",
        "ILayer.precision",
        "ILayer.num_outputs",
        "ILayer.set_output_type",
        "DataType",
        "DataType.FLOAT",
    ),
    "dla": (
        "DeviceType",
        "DeviceType.DLA",
        "IBuilderConfig.default_device_type",
        "IBuilderConfig.DLA_core",
        "IBuilderConfig.can_run_on_DLA",
        "BuilderFlag",
        "BuilderFlag.GPU_FALLBACK",
        "IBuilderConfig.set_flag",
        "IBuilderConfig.profiling_verbosity",
        "ProfilingVerbosity",
        "ProfilingVerbosity.DETAILED",
        "ICudaEngine.create_engine_inspector",
        "EngineInspector.get_engine_information",
        "LayerInformationFormat",
        "LayerInformationFormat.JSON",
    ),
}
NUMPY_TYPES = {"FLOAT": np.float32, "HALF": np.float16, "INT32": np.int32, "INT64": np.int64, "INT8": np.int8, "BOOL": np.bool_}


class BuildError(Exception):
    """A build TensorRT refused: (message, hint), shown as one line by whoever called."""

    def __init__(self, message, hint):
        super().__init__(message)
        self.message, self.hint = message, hint


# --- which typing a TensorRT version takes ----------------------------------------------------


def version_tuple(text) -> tuple:
    return tuple(int(part) for part in re.findall(r"\d+", str(text))[:3])


def typing_for(version) -> str:
    """STRONG for TensorRT >= 10, WEAK before (JetPack 5's 8.5/8.6)."""
    return STRONG if version_tuple(version)[:1] >= (FIRST_STRONG_MAJOR,) else WEAK


def typing_refusal(mode: str, version):
    """None, or (message, hint) when this TensorRT cannot build a graph typed for `mode`."""
    major = version_tuple(version)[:1]
    if mode == STRONG and major < (FIRST_STRONG_MAJOR,):
        return (
            "this bundle's ONNX is strongly typed, for TensorRT >= 10; this device has TensorRT {} (JetPack 5)".format(version),
            "deploy it again with a JetPack 5 profile (a weakly typed graph), or move to JetPack 6 or 7",
        )
    if mode == WEAK and major > (FIRST_STRONG_MAJOR,):
        return (
            "this bundle's ONNX is weakly typed (FP16/INT8 builder flags), which TensorRT {} no longer has".format(version),
            "deploy it again for TensorRT >= 10 (the default): the precision then travels in the graph's types",
        )
    return None


# --- the plan's FP32 nodes as TensorRT layers (the weakly typed path) -------------------------


def node_of_layer(name: str, nodes):
    """The ONNX node a TensorRT layer came from, or None. TensorRT's ONNX parser names each layer
    after its node; a node that becomes several layers gives "NODE_1" or "NODE_output"-style
    suffixes, and its own constants are "(Unnamed Layer* N) [Constant]". So a layer belongs to the
    node whose name is the layer's or its longest prefix ending at a "_", "/", " " or ":"."""
    if name.startswith("(Unnamed Layer"):
        return None
    best = None
    for node in nodes:
        if name == node:
            return node
        if name.startswith(node) and name[len(node)] in BOUNDARIES and (best is None or len(node) > len(best)):
            best = node
    return best


def plan_fp32_nodes(plan: dict) -> list:
    """The nodes a precision plan (precision_plan.json: `nodes`, each with its precision and reason) pins to FP32; layout ops follow their neighbours."""
    return [d["node"] for d in plan.get("nodes", []) if d["precision"] == "fp32" and not d["reason"].startswith("layout")]


def pinned_layers(layers, plan: dict) -> list:
    """The TensorRT layer names of the nodes the plan pins to FP32."""
    pinned = set(plan_fp32_nodes(plan))
    nodes = [d["node"] for d in plan.get("nodes", [])]
    return [layer for layer in layers if node_of_layer(layer, nodes) in pinned]


# --- building ---------------------------------------------------------------------------------


def flag_choices(mode: str, precision: str, pinned: bool = False, dla: bool = False) -> dict:
    """The flags a build sets, by name: the manifest records them, build_engine sets them."""
    weak = mode == WEAK and precision in ("fp16", "int8")
    builder = (["FP16"] + (["INT8"] if precision == "int8" else []) + (["OBEY_PRECISION_CONSTRAINTS"] if pinned else [])) if weak else []
    return {
        "network": ["STRONGLY_TYPED" if mode == STRONG else "EXPLICIT_BATCH"],
        "builder": builder + (["GPU_FALLBACK"] if dla else []),
    }


def network_flags(trt, mode: str) -> int:
    flag = trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED if mode == STRONG else trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH
    return 1 << int(flag)


def build_engine(trt, onnx_path, shapes: dict, mode: str, precision: str = "fp32", plan=None, workspace_mib=DEFAULT_WORKSPACE_MIB, **options):
    """(serialized engine, what the build did). `shapes`: {input name: {"min", "opt", "max"}}, one
    optimization profile. Options: `timing_cache` (a path, read and rewritten), `dla_core` (an int:
    layers on that DLA, the rest falling back to the GPU). STRONG: precision is the graph's; WEAK:
    `precision`'s builder flags and the plan's FP32 nodes pinned."""
    if mode not in TYPINGS:
        raise ValueError("mode must be one of {}".format(TYPINGS))
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt, mode))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BuildError("TensorRT {} cannot parse {}: {}".format(trt.__version__, Path(onnx_path).name, errors[:300]), "report the model and TensorRT version")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mib) << 20)
    layers = [network.get_layer(i) for i in range(network.num_layers)]
    pinned = set(pinned_layers([layer.name for layer in layers], plan or {})) if mode == WEAK and precision in ("fp16", "int8") else set()
    dla_core = options.get("dla_core")
    info = {"typing": mode, "flags": flag_choices(mode, precision, pinned=bool(pinned), dla=dla_core is not None), "pinned_fp32_layers": len(pinned)}
    if mode == WEAK and precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
        if precision == "int8":
            config.set_flag(trt.BuilderFlag.INT8)  # explicit quantization: the Q/DQ in the ONNX decide
        for layer in layers:
            if layer.name in pinned:
                layer.precision = trt.DataType.FLOAT
                for k in range(layer.num_outputs):
                    layer.set_output_type(k, trt.DataType.FLOAT)
        if pinned:
            config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
    if dla_core is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(dla_core)
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
        config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # the inspector then names each layer's device
        falls_back = [layer.name for layer in layers if not config.can_run_on_DLA(layer)]
        info["dla"] = {"core": int(dla_core), "layers": len(layers), "gpu_fallback": falls_back}
    profile = builder.create_optimization_profile()
    for name, bounds in shapes.items():
        profile.set_shape(name, tuple(bounds["min"]), tuple(bounds["opt"]), tuple(bounds["max"]))
    config.add_optimization_profile(profile)
    cache_path = options.get("timing_cache")
    cached = Path(cache_path).read_bytes() if cache_path and Path(cache_path).is_file() else b""
    config.set_timing_cache(config.create_timing_cache(cached), False)
    started = time.perf_counter()
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise BuildError("TensorRT {} could not build the engine (see its log above)".format(trt.__version__), "check the workspace limit and the plan")
    info["build_s"] = round(time.perf_counter() - started, 2)
    if cache_path:
        _write_atomic(Path(cache_path), bytes(config.get_timing_cache().serialize()))
    return bytes(engine), info


def engine_layers_on_dla(trt, engine) -> dict:
    """From the engine inspector (built with DETAILED verbosity): how many of the engine's layers
    run on the DLA (TensorRT fuses each DLA subgraph into one "ForeignNode" layer) and which on the GPU."""
    data = json.loads(engine.create_engine_inspector().get_engine_information(trt.LayerInformationFormat.JSON))
    names = [entry if isinstance(entry, str) else entry.get("Name", "") for entry in data.get("Layers", [])]
    dla = [name for name in names if "ForeignNode" in name]
    return {"dla_subgraphs": len(dla), "gpu_layers": len(names) - len(dla)}


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=str(path.parent), prefix=path.name + ".")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(temporary, str(path))
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


# --- CUDA through libcudart (ctypes) ----------------------------------------------------------

LIBCUDART = ("libcudart.so", "libcudart.so.13", "libcudart.so.12", "libcudart.so.11.0")
HOST_TO_DEVICE, DEVICE_TO_HOST = 1, 2
COMPUTE_MAJOR, COMPUTE_MINOR = 75, 76  # cudaDevAttrComputeCapabilityMajor / Minor


def load_cudart():
    """libcudart, as JetPack and the CUDA toolkit install it; None where there is none."""
    found = ctypes.util.find_library("cudart")
    for name in LIBCUDART + ((found,) if found else ()):
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    return None


class Cuda:
    """The few CUDA runtime calls a TensorRT engine needs: device memory, copies, a stream, events."""

    def __init__(self, lib):
        self.lib = lib
        lib.cudaGetErrorString.restype = ctypes.c_char_p
        lib.cudaEventElapsedTime.argtypes = [ctypes.POINTER(ctypes.c_float), ctypes.c_void_p, ctypes.c_void_p]
        lib.cudaMemcpyAsync.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_void_p]
        lib.cudaMalloc.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_size_t]
        lib.cudaFree.argtypes = [ctypes.c_void_p]
        for name in ("cudaStreamSynchronize", "cudaStreamDestroy", "cudaEventSynchronize", "cudaEventDestroy"):
            getattr(lib, name).argtypes = [ctypes.c_void_p]
        lib.cudaEventRecord.argtypes = [ctypes.c_void_p, ctypes.c_void_p]

    def check(self, code, what: str) -> None:
        if code != 0:
            raise RuntimeError("CUDA {} failed: {}".format(what, self.lib.cudaGetErrorString(code).decode(errors="replace")))

    def identity(self) -> dict:
        """{"gpu": its name, "compute_capability": "8.7"}: what an engine is tied to."""
        device = ctypes.c_int(0)
        self.check(self.lib.cudaGetDevice(ctypes.byref(device)), "cudaGetDevice")
        properties = ctypes.create_string_buffer(16384)  # cudaDeviceProp starts with char name[256], in every CUDA version
        self.check(self.lib.cudaGetDeviceProperties(properties, device), "cudaGetDeviceProperties")
        major, minor = ctypes.c_int(0), ctypes.c_int(0)
        self.check(self.lib.cudaDeviceGetAttribute(ctypes.byref(major), COMPUTE_MAJOR, device), "cudaDeviceGetAttribute")
        self.check(self.lib.cudaDeviceGetAttribute(ctypes.byref(minor), COMPUTE_MINOR, device), "cudaDeviceGetAttribute")
        name = properties.raw[:256].split(b"\0", 1)[0].decode(errors="replace")
        return {"gpu": name, "compute_capability": "{}.{}".format(major.value, minor.value)}

    def malloc(self, nbytes: int) -> int:
        pointer = ctypes.c_void_p()
        self.check(self.lib.cudaMalloc(ctypes.byref(pointer), max(int(nbytes), 1)), "cudaMalloc")
        return pointer.value

    def free(self, pointer: int) -> None:
        self.check(self.lib.cudaFree(pointer), "cudaFree")

    def stream(self) -> int:
        stream = ctypes.c_void_p()
        self.check(self.lib.cudaStreamCreate(ctypes.byref(stream)), "cudaStreamCreate")
        return stream.value or 0

    def synchronize(self, stream: int) -> None:
        self.check(self.lib.cudaStreamSynchronize(stream), "cudaStreamSynchronize")

    def to_device(self, pointer: int, array: np.ndarray, stream: int) -> None:
        self.check(self.lib.cudaMemcpyAsync(pointer, array.ctypes.data, array.nbytes, HOST_TO_DEVICE, stream), "cudaMemcpyAsync")

    def to_host(self, array: np.ndarray, pointer: int, stream: int) -> None:
        self.check(self.lib.cudaMemcpyAsync(array.ctypes.data, pointer, array.nbytes, DEVICE_TO_HOST, stream), "cudaMemcpyAsync")

    def event(self) -> int:
        event = ctypes.c_void_p()
        self.check(self.lib.cudaEventCreate(ctypes.byref(event)), "cudaEventCreate")
        return event.value

    def times_ms(self, run, stream: int, warmup: int, count: int) -> list:
        """GPU time of each of `count` calls of `run` (after `warmup`), from events recorded around
        it on `stream`: trtexec's "GPU Compute Time"."""
        for _ in range(warmup):
            run()
        self.synchronize(stream)
        start, end, elapsed, times = self.event(), self.event(), ctypes.c_float(), []
        try:
            for _ in range(count):
                self.check(self.lib.cudaEventRecord(start, stream), "cudaEventRecord")
                run()
                self.check(self.lib.cudaEventRecord(end, stream), "cudaEventRecord")
                self.check(self.lib.cudaEventSynchronize(end), "cudaEventSynchronize")
                self.check(self.lib.cudaEventElapsedTime(ctypes.byref(elapsed), start, end), "cudaEventElapsedTime")
                times.append(float(elapsed.value))
        finally:
            self.lib.cudaEventDestroy(start)
            self.lib.cudaEventDestroy(end)
        return times


class Engine:
    """A deserialized engine with its buffers: numpy in, numpy out, any named inputs (a SAM
    decoder's five, with a dynamic number of points); each call sets every input's shape."""

    def __init__(self, trt, cuda: Cuda, serialized: bytes, name: str = "engine"):
        self.trt, self.cuda, self.name = trt, cuda, name
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self.runtime.deserialize_cuda_engine(serialized)
        if self.engine is None:
            raise BuildError("TensorRT {} cannot load {}".format(trt.__version__, name), "delete the engine cache beside the bundle and run again")
        self.context = self.engine.create_execution_context()
        self.stream = cuda.stream()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]
        self.dtypes = {n: NUMPY_TYPES[self.engine.get_tensor_dtype(n).name] for n in names}
        self.buffers = {}  # name -> (device pointer, bytes)

    def _buffer(self, name: str, nbytes: int) -> int:
        held = self.buffers.get(name)
        if held is None or held[1] < nbytes:
            if held is not None:
                self.cuda.free(held[0])
            held = self.buffers[name] = (self.cuda.malloc(nbytes), nbytes)
        return held[0]

    def bind(self, feed: dict) -> dict:
        """Every input copied in on the engine's stream, its shape set; the outputs' buffers; every
        address set. Returns the host arrays the outputs are copied into."""
        missing = [name for name in self.inputs if name not in feed]
        if missing:
            raise ValueError("{} takes {}; the feed has no {!r}".format(self.name, ", ".join(self.inputs), missing[0]))
        for name in self.inputs:
            array = np.ascontiguousarray(feed[name], dtype=self.dtypes[name])
            if not self.context.set_input_shape(name, tuple(array.shape)):
                low, _, high = (tuple(d) for d in self.engine.get_tensor_profile_shape(name, 0))
                raise ValueError("{} takes {} from {} to {}, not {}".format(self.name, name, low, high, tuple(array.shape)))
            pointer = self._buffer(name, array.nbytes)
            self.cuda.to_device(pointer, array, self.stream)
            self.context.set_tensor_address(name, pointer)
            self.buffers[name + "#host"] = array  # alive until the copy is done
        results = {}
        for name in self.outputs:
            results[name] = np.empty(tuple(self.context.get_tensor_shape(name)), dtype=self.dtypes[name])
            self.context.set_tensor_address(name, self._buffer(name, results[name].nbytes))
        return results

    def execute(self) -> None:
        if not self.context.execute_async_v3(self.stream):
            raise RuntimeError("TensorRT could not enqueue {}".format(self.name))

    def infer(self, feed: dict) -> dict:
        results = self.bind(feed)
        self.execute()
        for name, array in results.items():
            self.cuda.to_host(array, self.buffers[name][0], self.stream)
        self.cuda.synchronize(self.stream)
        return {name: array.astype(np.float32) if array.dtype == np.float16 else array for name, array in results.items()}

    def gpu_times_ms(self, feed: dict, warmup: int = 20, count: int = 100) -> list:
        self.bind(feed)
        return self.cuda.times_ms(self.execute, self.stream, warmup=warmup, count=count)

    def close(self) -> None:
        for name, held in list(self.buffers.items()):
            if not name.endswith("#host"):
                self.cuda.free(held[0])
        self.buffers = {}
        self.context = self.engine = None


# --- a bundle's engines: built here once, cached beside it ------------------------------------


def import_tensorrt():
    import tensorrt as trt

    if not hasattr(trt, "Builder"):
        raise ImportError("only tensorrt's type stubs are installed")
    return trt


def cannot_run_here(manifest=None):
    """A TensorRT bundle needs TensorRT, a CUDA runtime and a TensorRT that takes its graph's typing."""
    try:
        trt = import_tensorrt()
    except ImportError as exc:
        return ("TensorRT is not installed here ({})".format(exc), "on a Jetson it comes with JetPack (python3-libnvinfer); elsewhere: pip install tensorrt")
    lib = load_cudart()
    if lib is None:
        return ("no CUDA runtime (libcudart) found", "run on the NVIDIA device the bundle is for (JetPack installs it)")
    try:
        Cuda(lib).identity()
    except RuntimeError as exc:
        return ("no usable CUDA GPU here ({})".format(exc), "run on the NVIDIA device the bundle is for, with its driver loaded")
    export = (manifest or {}).get("export", {})
    if "typing" not in export:
        return (
            "this bundle was made by an evitdeploy that left the TensorRT build to `evitdeploy build` alone",
            "deploy it again with this evitdeploy (its verify.py then builds and checks the engine here), or run sh build_engine.sh",
        )
    refusal = typing_refusal(export["typing"]["mode"], trt.__version__)
    if refusal:
        return refusal
    expected = export.get("tensorrt_expected")
    if expected and not _in_range(trt.__version__, expected):
        return (
            "this device has TensorRT {}; the bundle was made for {} ({})".format(trt.__version__, expected["range"], expected["profile"]),
            expected["hint"],
        )
    return None


def _in_range(version, expected: dict) -> bool:
    found = version_tuple(version)
    return version_tuple(expected["min"]) <= found[: len(version_tuple(expected["min"]))] and (
        not expected.get("below") or found < version_tuple(expected["below"])
    )


def engine_build_of(manifest: dict, model_file: str) -> dict:
    """The manifest's record of the engine built from `model_file` (an ONNX the bundle lists)."""
    export = manifest["export"]
    for section in (export, export.get("decoder") or {}):
        if section.get("onnx") == model_file:
            return section
    raise ValueError("the manifest records no engine built from {}".format(model_file))


def cache_folder(bundle: Path, version: str, gpu: str) -> Path:
    slug = re.sub(r"[^A-Za-z0-9.]+", "-", "{}-{}".format(version, gpu)).strip("-")
    return bundle.parent / (bundle.name + ".engines") / slug


def engine_for(bundle: Path, manifest: dict, model_file: str, trt, cuda: Cuda, workspace_mib=None, progress=None) -> tuple:
    """(serialized engine, its record): the cached one when the same ONNX was built here by this
    TensorRT on this GPU, else a new build (written to the cache atomically). `workspace_mib`
    overrides the manifest's builder workspace."""
    bundle = Path(bundle)
    section = engine_build_of(manifest, model_file)
    onnx_path = bundle / model_file
    digest = hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    identity = cuda.identity()
    folder = cache_folder(bundle, trt.__version__, identity["gpu"])
    engine_path = folder / section["engine"]["file"]
    record_path = folder / (section["engine"]["file"] + "." + ENGINE_RECORD)
    if engine_path.is_file():
        record = read_record(folder, section["engine"]["file"])
        if record.get("onnx_sha256") == digest and record.get("tensorrt") == trt.__version__ and record.get("gpu") == identity["gpu"]:
            return engine_path.read_bytes(), dict(record, cached=True, cache=str(engine_path))
    plan_path = bundle / "precision_plan.json"
    precision = section.get("precision", manifest["precision"])
    plan = json.loads(plan_path.read_text()) if plan_path.is_file() and precision != "fp32" else None
    if progress:
        progress("building {} with TensorRT {} on {} (once: cached in {})".format(section["engine"]["file"], trt.__version__, identity["gpu"], folder))
    serialized, info = build_engine(
        trt,
        onnx_path,
        shapes=section["named_shapes"],
        mode=manifest["export"]["typing"]["mode"],
        precision=precision,
        plan=plan,
        workspace_mib=workspace_mib or section.get("workspace_mib", DEFAULT_WORKSPACE_MIB),
        timing_cache=folder / TIMING_CACHE,
        dla_core=section.get("dla_core"),
    )
    if section.get("dla_core") is not None:
        probe = Engine(trt, cuda, serialized, name=section["engine"]["file"])
        info["dla"].update(engine_layers_on_dla(trt, probe.engine))
        probe.close()
    record = dict(info, onnx_sha256=digest, tensorrt=trt.__version__, **identity)
    _write_atomic(engine_path, serialized)
    _write_atomic(record_path, json.dumps(record, indent=2).encode())
    return serialized, dict(record, cached=False, cache=str(engine_path))


def read_record(folder: Path, engine_file: str) -> dict:
    """What the cached engine's build did and what it was built from ({} where none is cached)."""
    try:
        return json.loads((Path(folder) / (engine_file + "." + ENGINE_RECORD)).read_text())
    except (OSError, ValueError):
        return {}


def _note(line: str) -> None:
    import sys

    print(line, file=sys.stderr)


def open_model(path, manifest: dict, threads, workspace_mib=None, progress=_note):
    """infer(batch) -> the manifest's output (a dict of named inputs, a SAM decoder's, gives every
    output), on the engine built here from the bundle's ONNX at `path` (or a bundle's engine file,
    built where it was made). infer.gpu_times_ms(batch, warmup, count): GPU compute per run."""
    path = Path(path)
    trt = import_tensorrt()
    lib = load_cudart()
    if lib is None:
        raise RuntimeError("no CUDA runtime (libcudart) found")
    cuda = Cuda(lib)
    if path.suffix == ".engine":
        serialized = path.read_bytes()
        record = dict(manifest["export"]["engine"], tensorrt=trt.__version__, cached=True, typing=manifest["export"]["typing"]["mode"], **cuda.identity())
    else:
        serialized, record = engine_for(path.parent, manifest, path.name, trt=trt, cuda=cuda, workspace_mib=workspace_mib, progress=progress)
    runner = Engine(trt, cuda, serialized, name=path.name)
    output = manifest["spec"]["output_name"]

    def feed_of(batch):
        return batch if isinstance(batch, dict) else {runner.inputs[0]: batch}

    def infer(batch):
        outputs = runner.infer(feed_of(batch))
        return outputs if isinstance(batch, dict) else outputs[output]

    infer.providers = [
        "TensorRT {} on {} ({}, engine {})".format(record["tensorrt"], record["gpu"], record["typing"], "cached" if record["cached"] else "built")
    ]
    infer.gpu_times_ms = lambda batch, warmup, count: runner.gpu_times_ms(feed_of(batch), warmup, count)
    infer.record = record
    return infer
