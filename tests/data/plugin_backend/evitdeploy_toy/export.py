"""The toy export: the graph, written as its `graph` option says, checked against PyTorch."""

from pathlib import Path

from evitdeploy.artifact import Artifact, build_manifest, package_versions
from evitdeploy.files import staged_folder, write_json
from evitdeploy.backends.reference import against_reference, inputs_for
from evitdeploy.graph import default_opset, write_graph

from evitdeploy_toy import BACKEND
from evitdeploy_toy.runner import ToyRunner


def export(model, spec, options) -> Artifact:
    graph = options.backend_options["graph"]  # checked by the registry: slim or plain
    opset = options.opset or default_opset(spec)
    with staged_folder(options.output) as staging:
        path = staging / BACKEND.model_file
        write_graph(model, spec, path, opset=opset, simplify=graph == "slim", step=options.step)
        with ToyRunner(path) as runner:
            checks = against_reference(
                model, spec, runner, batches=[inputs_for(options.validation_inputs, spec.input_shape)], precision=options.precision,
                what="toy graph", hint="report it",
            )
        manifest = build_manifest(
            staging, BACKEND.name, options.precision, spec=spec, model_file=BACKEND.model_file, source=options.source,
            export={"opset": opset, "graph": graph, "simplified": graph == "slim"}, validation={"data": options.validation_source, "checks": checks}, toolchain=package_versions("torch", "onnx", "onnxruntime", "numpy"),
        )
        write_json(staging / "manifest.json", manifest)
    folder = Path(options.output)
    return Artifact(folder, folder / BACKEND.model_file, BACKEND.name, precision=options.precision, spec=spec, manifest=manifest)
