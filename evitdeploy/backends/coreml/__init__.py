"""Core ML ML Programs for Apple devices; converted anywhere, predicted only on macOS."""

from evitdeploy.backends.descriptor import Backend, Package

BACKEND = Backend(
    name="coreml",
    folder="coreml",
    title="Core ML mlprogram (Apple devices; prediction on macOS only)",
    model_file="model.mlpackage",
    precisions=("fp32", "fp16", "int8"),
    packages=(Package("coremltools", "Core ML conversion (prediction on macOS only)"),),
    install="pip install 'evitdeploy[coreml]'",
    device_runtime=("coremltools", "coremltools"),
    extra="coreml",
    carried=("precision_plan.json", "ranges.json"),
    predicts_on="macOS",
)
