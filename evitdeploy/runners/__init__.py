"""One runner per backend behind one contract; heavy backends are imported only when used."""

from evitdeploy.runners.base import Runner, TensorMeta

__all__ = ["Runner", "TensorMeta"]
