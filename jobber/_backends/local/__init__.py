"""The local backend: jobs on this host, confined by cgroup v2, cgroup v1 or nothing.

``backend.py`` is the part the rest of jobber calls. The others form the supervisor
island: ``supervisor.py`` runs without the package (no cryptography, no typing) on every
job's end, so ``isolation``, ``cgroupfs``, ``cgroup_v1``, ``cgroup_v2`` and ``unconfined``
import only the standard library and ``jobber._errors``. Keep this file free of imports.
"""
