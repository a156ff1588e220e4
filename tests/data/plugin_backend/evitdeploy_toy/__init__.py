"""A throwaway backend from outside evitdeploy: the worked example of adding one.

One folder (this package: the descriptor here, export.py, runner.py, device.py) and one registry
entry (the `evitdeploy.backends` entry point its distribution declares). It runs the model's ONNX
graph on ONNX Runtime, and takes one option of its own, `graph`: `slim` (onnxslim) or `plain`.
"""

from evitdeploy.backends.descriptor import Backend, BackendOption, Choice, Package

BACKEND = Backend(
    name="toy",
    folder="toy",
    title="a throwaway backend (ONNX on ONNX Runtime) registered by another package",
    model_file="model.onnx",
    precisions=("fp32",),
    packages=(Package("onnxruntime", "runs the graph"),),
    install="pip install evitdeploy-toy",
    device_runtime=("onnxruntime", "onnxruntime"),
    opens_bare=False,  # a bare .onnx is ONNX Runtime's
    options=(BackendOption("graph", "slim: simplified by onnxslim; plain: as torch.onnx writes it", choices=(Choice("slim"), Choice("plain"))),),
)
