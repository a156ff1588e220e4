"""The toy runner: the runner contract over an ONNX Runtime session."""

from pathlib import Path

from evitdeploy.backends.runner import Runner, import_runtime

from evitdeploy_toy import BACKEND


class ToyRunner(Runner):
    backend = "toy"

    def __init__(self, model_path, threads=None):
        self.model_path, self.threads, self.session = Path(model_path), threads, None

    def load(self) -> None:
        ort = import_runtime("onnxruntime", "onnxruntime", BACKEND.install)
        options = ort.SessionOptions()
        if self.threads:
            options.intra_op_num_threads = self.threads
        self.session = ort.InferenceSession(str(self.model_path), options, providers=["CPUExecutionProvider"])

    @property
    def providers(self) -> list:
        return list(self.session.get_providers()) if self.session else []

    def infer(self, feed):
        names = [o.name for o in self.session.get_outputs()]
        return dict(zip(names, self.session.run(names, feed)))

    def close(self) -> None:
        self.session = None

    def versions(self) -> dict:
        return {"onnxruntime": import_runtime("onnxruntime", "onnxruntime", BACKEND.install).__version__}


def for_artifact(artifact, threads=None, taking_turns=False) -> ToyRunner:
    return ToyRunner(artifact.model_file, threads=threads)
