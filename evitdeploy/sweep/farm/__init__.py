"""Sweeps over a Ray cluster of real devices: nodes advertise, as Ray custom resources, the
profiles they are and the backends they have; exports go wherever CPUs and the backend are, a
bench only to a node of its profile, which it then holds alone.

Ray is the engine (scheduling, object store, failure detection); nothing here is a scheduler.
`ray` is an optional extra (`evitdeploy[farm]`), imported only when a farm is used.
"""
