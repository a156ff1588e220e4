"""What runs on the device: a bundle carries copies of these files (as `evitdeploy_device/`).

Numpy and the standard library only, Python 3.8 syntax (Jetson's JetPack 5), relative imports
between the modules: the same files are evitdeploy's own metrics, integrity checks and
verification, so the device and the host that made a bundle measure in exactly the same way.
A backend's own runtime code is its `backends/<folder>/device.py`, passed in as a module.
"""
