"""TensorRT engines for NVIDIA GPUs and Jetson, built from the ONNX export and its precision plan."""

from evitdeploy.backends.descriptor import Backend, BackendOption, Choice, Package

BACKEND = Backend(
    name="trt",
    folder="tensorrt",
    title="TensorRT engine (NVIDIA GPUs, Jetson)",
    model_file="model.engine",
    precisions=("fp32", "fp16", "int8"),
    packages=(Package("tensorrt", "TensorRT engines"),),
    install="on Jetson use JetPack's TensorRT; on a server pip install 'evitdeploy[tensorrt]' from NVIDIA's index (pypi.nvidia.com)",
    device_runtime=("tensorrt", "tensorrt"),
    aliases=("tensorrt",),
    extra="tensorrt",
    carried=("precision_plan.json", "ranges.json", "build_engine.sh", "model.onnx", "encoder.onnx", "decoder.onnx"),  # what a rebuild reads
    opens_bare=False,
    version_bound=True,
    predicts_on="an NVIDIA GPU with TensorRT",
    consumes=("onnxruntime",),
    options=(
        BackendOption(
            "engine", "build the engine here (false: the ONNX, its precision plan and the build recipe only, for the device to build)", on_by_default=True
        ),
        BackendOption(
            "dla_core",
            "run the model (a SAM encoder) on this Jetson DLA core, layers it cannot run falling back to the GPU (AGX Orin: 0 or 1); "
            "the device's build reports which layers ran where",
            choices=(Choice("none"), Choice("0", precisions=("fp16", "int8")), Choice("1", precisions=("fp16", "int8"))),
        ),
    ),
    builds_on_device="engine",
    gpu_compute_timing=True,
)
