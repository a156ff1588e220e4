"""ExecuTorch .pte for apps that already link PyTorch's on-device runtime (XNNPACK; Core ML delegate)."""

from evitdeploy.backends.descriptor import Backend, BackendOption, Choice, Package

BACKEND = Backend(
    name="executorch",
    folder="executorch",
    title="ExecuTorch .pte (Android/iOS apps linking ExecuTorch; XNNPACK, or the Core ML delegate)",
    model_file="model.pte",
    precisions=("fp32", "int8"),
    packages=(Package("executorch", "PyTorch -> .pte, and its Python runtime"),),
    install="pip install -c constraints.txt 'evitdeploy[executorch]'",
    device_runtime=("executorch.runtime", "executorch"),
    stock_int8="XNNPACKQuantizer",
    device_imports=("torch",),  # pip executorch requires torch: its Python runtime takes and returns torch tensors
    aliases=("et", "pte"),
    extra="executorch",
    options=(
        BackendOption(
            "delegate",
            "xnnpack (CPU, ARM phones; fp32/int8) or coreml (Apple; fp32, predicts only in an app)",
            choices=(
                Choice("xnnpack"),
                Choice(
                    "coreml",
                    precisions=("fp32",),
                    title="the Core ML delegate",
                    instead="the plan's INT8 is applied through XNNPACK's quantizer: use --delegate xnnpack for int8, or --target coreml for Core ML's own FP16/INT8 following the plan",
                ),
            ),
            flag="--delegate",
        ),
    ),
    consumes=("coreml",),  # the Core ML delegate converts with coremltools, imported as the coreml backend does
    carried=("precision_plan.json", "ranges.json", "executorch_plan.json"),
    declined=(
        (
            "fp16",
            "ExecuTorch's XNNPACK FP16 lowering loses the accuracy the plan keeps (trained digits B0: "
            "63.1% top-1 vs 98.3% FP32, the plan's FP32 islands included)",
        ),
    ),
)
