"""evitdeploy: EfficientViT from PyTorch to ONNX Runtime, TensorRT, Core ML and LiteRT, with proof."""

__version__ = "0.1.0"
