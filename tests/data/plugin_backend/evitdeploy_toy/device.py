"""The toy runtime on a device (a bundle carries it as evitdeploy_device/runtime.py): numpy and onnxruntime."""

TARGET = "toy"
RUNTIME = ("onnxruntime", "onnxruntime")


def open_model(path, manifest, threads):
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name, output = session.get_inputs()[0].name, manifest["spec"]["output_name"]

    def infer(batch):
        return session.run([output], {name: batch})[0]

    infer.providers = session.get_providers()
    return infer
