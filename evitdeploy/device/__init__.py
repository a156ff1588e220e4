"""What runs on the device: a bundle carries copies of these files (as `evitdeploy_device/`).

Numpy and the standard library only, Python 3.8 syntax (Jetson's JetPack 5), relative imports
between the modules: the same files are evitdeploy's own metrics, integrity checks and
verification, so the device and the host that made a bundle measure in exactly the same way.
A backend's own runtime code is its `backends/<folder>/device.py`, passed in as a module.
"""


def load(bundle, threads=None, runtime=None, public_key=None):
    """A bundle for an app: `evitdeploy_device.load(bundle_dir).predict(rgb_uint8_photo)` (app.py).
    Imported on use, so `import evitdeploy_device` (and evitdeploy's spec) need no numpy."""
    from .app import load as load_bundle

    return load_bundle(bundle, threads=threads, runtime=runtime, public_key=public_key)
