"""A stand-in for TensorRT (it cannot be installed here), importable as `tensorrt` from tests/standin.

It offers only names of the real API (the name checks in test_tensorrt.py hold the device module to
those) and records what a build asks for in RECORD. A "serialized engine" is a header (the build's
flags, shapes, typing) and the ONNX bytes; an engine runs that ONNX on ONNX Runtime's CPU, reading
its inputs from and writing its outputs to the addresses set on the context (the fake libcudart's
"device" memory is host memory), so the device code's copies, shapes and dtypes are really
exercised. Layers are the ONNX nodes where `onnx` imports (on the host; on a device run it is
blocked, and the network has none). On the DLA, layers of MatMul, Reshape and Transpose nodes
cannot run (attention reshapes fall off the DLA) and fall back to the GPU.
"""

import ctypes
import json

import numpy as np

__version__ = "10.99.0"
RECORD = {"builds": []}
HEADER = b"STAND-IN ENGINE\n"
OFF_DLA = ("MatMul", "Reshape", "Transpose")


class _Enum:
    def __init__(self, name, value):
        self.name, self.value = name, value

    def __int__(self):
        return self.value

    def __repr__(self):
        return self.name


def _enum(name, members):
    return type(name, (), {member: _Enum(member, i) for i, member in enumerate(members)})


NetworkDefinitionCreationFlag = _enum("NetworkDefinitionCreationFlag", ("EXPLICIT_BATCH", "STRONGLY_TYPED"))
BuilderFlag = _enum("BuilderFlag", ("FP16", "INT8", "OBEY_PRECISION_CONSTRAINTS", "GPU_FALLBACK"))
DataType = _enum("DataType", ("FLOAT", "HALF", "INT32", "INT64", "INT8", "BOOL"))
MemoryPoolType = _enum("MemoryPoolType", ("WORKSPACE",))
TensorIOMode = _enum("TensorIOMode", ("NONE", "INPUT", "OUTPUT"))
DeviceType = _enum("DeviceType", ("GPU", "DLA"))
ProfilingVerbosity = _enum("ProfilingVerbosity", ("NONE", "LAYER_NAMES_ONLY", "DETAILED"))
LayerInformationFormat = _enum("LayerInformationFormat", ("ONELINE", "JSON"))
ONNX_TYPES = {"tensor(float)": DataType.FLOAT, "tensor(float16)": DataType.HALF, "tensor(int64)": DataType.INT64, "tensor(int32)": DataType.INT32}


class Logger:
    WARNING = _Enum("WARNING", 2)

    def __init__(self, severity):
        self.severity = severity


class ILayer:
    def __init__(self, name, op_type):
        self.name, self.op_type, self.precision, self.num_outputs, self.output_types = name, op_type, None, 1, {}

    def set_output_type(self, index, dtype):
        self.output_types[index] = dtype


class INetworkDefinition:
    def __init__(self, flags):
        self.flags, self.layers, self.onnx = flags, [], None

    @property
    def num_layers(self):
        return len(self.layers)

    def get_layer(self, i):
        return self.layers[i]


class OnnxParser:
    num_errors = 0

    def __init__(self, network, logger):
        self.network = network

    def parse_from_file(self, path):
        with open(path, "rb") as handle:
            self.network.onnx = handle.read()
        try:
            import onnx
        except ImportError:  # a device run: onnx is blocked there
            return True
        for node in onnx.load_from_string(self.network.onnx).graph.node:
            self.network.layers.append(ILayer(node.name, node.op_type))
        return True

    def get_error(self, i):
        return ""


class ITimingCache:
    def __init__(self, data):
        self.data = data

    def serialize(self):
        return self.data + b"+"


class IOptimizationProfile:
    def __init__(self):
        self.shapes = {}

    def set_shape(self, name, low, opt, high):
        self.shapes[name] = {"min": list(low), "opt": list(opt), "max": list(high)}


class IBuilderConfig:
    def __init__(self):
        self.flags, self.workspace, self.profiles, self.cache = [], None, [], None
        self.default_device_type, self.DLA_core, self.profiling_verbosity = DeviceType.GPU, -1, ProfilingVerbosity.NONE

    def set_flag(self, flag):
        self.flags.append(flag.name)

    def set_memory_pool_limit(self, pool, size):
        self.workspace = (pool.name, size)

    def add_optimization_profile(self, profile):
        self.profiles.append(profile.shapes)

    def create_timing_cache(self, data):
        return ITimingCache(bytes(data))

    def set_timing_cache(self, cache, ignore_mismatch):
        self.cache = cache

    def get_timing_cache(self):
        return self.cache

    def can_run_on_DLA(self, layer):
        return layer.op_type not in OFF_DLA


class Builder:
    def __init__(self, logger):
        pass

    def create_network(self, flags):
        return INetworkDefinition(flags)

    def create_builder_config(self):
        return IBuilderConfig()

    def create_optimization_profile(self):
        return IOptimizationProfile()

    def build_serialized_network(self, network, config):
        strongly = bool(network.flags & (1 << int(NetworkDefinitionCreationFlag.STRONGLY_TYPED)))
        on_dla = config.default_device_type is DeviceType.DLA
        build = {
            "strongly_typed": strongly,
            "network_flags": network.flags,
            "flags": config.flags,
            "workspace": config.workspace,
            "profiles": config.profiles,
            "timing_cache_in": config.cache.data.decode(errors="replace") if config.cache else None,
            "pinned": sorted(layer.name for layer in network.layers if layer.precision is DataType.FLOAT),
            "dla_core": config.DLA_core if on_dla else None,
            "layers": [[layer.name, on_dla and config.can_run_on_DLA(layer)] for layer in network.layers],
        }
        RECORD["builds"].append(build)
        return HEADER + json.dumps(build).encode() + b"\n" + network.onnx


class Runtime:
    def __init__(self, logger):
        pass

    def deserialize_cuda_engine(self, data):
        data = bytes(data)
        if not data.startswith(HEADER):
            return None
        header, model = data[len(HEADER) :].split(b"\n", 1)
        return ICudaEngine(json.loads(header), model)


class EngineInspector:
    def __init__(self, build):
        self.build = build

    def get_engine_information(self, format):
        layers, dla = [], []
        for name, on_dla in self.build["layers"]:
            if on_dla:
                dla.append(name)
            else:
                layers.append({"Name": name})
        if dla:
            layers.append({"Name": "{ForeignNode[" + dla[0] + "..." + dla[-1] + "]}"})
        return json.dumps({"Layers": layers})


class ICudaEngine:
    def __init__(self, build, model):
        import onnxruntime as ort

        self.build = build
        self.session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
        self.inputs = {i.name: i for i in self.session.get_inputs()}
        self.outputs = {o.name: o for o in self.session.get_outputs()}
        self.names = list(self.inputs) + list(self.outputs)

    @property
    def num_io_tensors(self):
        return len(self.names)

    def get_tensor_name(self, i):
        return self.names[i]

    def get_tensor_mode(self, name):
        return TensorIOMode.INPUT if name in self.inputs else TensorIOMode.OUTPUT

    def get_tensor_dtype(self, name):
        return ONNX_TYPES[(self.inputs.get(name) or self.outputs[name]).type]

    def get_tensor_profile_shape(self, name, profile):
        bounds = self.build["profiles"][profile][name]
        return bounds["min"], bounds["opt"], bounds["max"]

    def create_execution_context(self):
        return IExecutionContext(self)

    def create_engine_inspector(self):
        return EngineInspector(self.build)


NUMPY = {"FLOAT": np.float32, "HALF": np.float16, "INT64": np.int64, "INT32": np.int32}


def _view(address, shape, dtype):
    count = int(np.prod(shape)) if shape else 1
    buffer = (ctypes.c_char * (count * np.dtype(dtype).itemsize)).from_address(address)
    return np.frombuffer(buffer, dtype=dtype).reshape(shape)


class IExecutionContext:
    def __init__(self, engine):
        self.engine, self.shapes, self.addresses, self.results = engine, {}, {}, None

    def set_input_shape(self, name, shape):
        bounds = self.engine.build["profiles"][0][name]
        if any(d < lo or d > hi for d, lo, hi in zip(shape, bounds["min"], bounds["max"])) or len(shape) != len(bounds["min"]):
            return False
        self.shapes[name], self.results = tuple(shape), None
        return True

    def set_tensor_address(self, name, address):
        self.addresses[name] = address

    def _run(self):
        feed = {}
        for name in self.engine.inputs:
            dtype = NUMPY[self.engine.get_tensor_dtype(name).name]
            feed[name] = _view(self.addresses[name], self.shapes[name], dtype).copy()
        names = list(self.engine.outputs)
        return dict(zip(names, self.engine.session.run(names, feed)))

    def get_tensor_shape(self, name):
        """Output shapes follow from the inputs (already in "device" memory: the fake copies are synchronous)."""
        self.results = self.results or self._run()
        return self.results[name].shape

    def execute_async_v3(self, stream):
        self.results = self._run()
        for name, array in self.results.items():
            _view(self.addresses[name], array.shape, array.dtype)[...] = array
        return True
