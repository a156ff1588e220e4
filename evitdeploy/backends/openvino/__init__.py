"""OpenVINO IR for Intel and AMD x86 CPUs: FP32, BF16 where the CPU has it, INT8 following the plan."""

from evitdeploy.backends.descriptor import Backend, Package

BACKEND = Backend(
    name="openvino",
    folder="openvino",
    title="OpenVINO IR (x86 CPUs; BF16 on CPUs with AVX512-BF16 or AMX)",
    model_file="model.openvino",  # a folder holding the IR: model.xml + model.bin
    precisions=("fp32", "bf16", "int8"),
    packages=(Package("openvino", "OpenVINO runtime and converter"), Package("nncf", "INT8 following the precision plan")),
    install="pip install 'evitdeploy[openvino]'",
    device_runtime=("openvino", "openvino"),
    aliases=("ov",),
    extra="openvino",
    carried=("precision_plan.json", "ranges.json"),
    x86_int8_kernels=True,
    stock_int8="nncf.quantize",
    consumes=("onnxruntime",),
)
