"""The EfficientViT zoo, implemented for deployment (torch is imported only when building)."""

from evitdeploy.models.registry import MODELS, build_model, create_model, get_spec

__all__ = ["MODELS", "build_model", "create_model", "get_spec"]
