"""The Jupyter server extension of jobber's JupyterLab Jobs panel.

Loaded by the Jupyter server (``etc/jupyter/jupyter_server_config.d/jobber_lab.json``
enables it), it serves the panel the jobs of the identity the server is configured with:
see ``_handlers`` for the endpoints, ``_events`` for the live feed of the panel and
``_view`` for a job's live view. The panel itself (TypeScript) ships prebuilt in
``jobber_lab/labextension/``.

Turn it off with ``jupyter server extension disable jobber_lab``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["_jupyter_labextension_paths", "_jupyter_server_extension_points", "_load_jupyter_server_extension"]


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    """Where the prebuilt frontend is (for ``jupyter labextension develop`` and the wheel)."""
    return [{"src": "labextension", "dest": "jobber-lab"}]


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    """The server extension (this module)."""
    return [{"module": "jobber_lab"}]


def _load_jupyter_server_extension(server_app: Any) -> None:
    """Add the Jobs panel's endpoints to the Jupyter server."""
    from jobber_lab._handlers import LabJobs, handlers

    web_app = server_app.web_app
    lab = LabJobs()
    web_app.settings["jobber_lab"] = lab
    web_app.add_handlers(".*$", handlers(web_app.settings["base_url"]))
    server_app.log.info("jobber_lab: the Jobs panel's endpoints are at %sjobber/api/ (identity: %s)",
                        web_app.settings["base_url"], lab.identity.describe()["subject"] or lab.identity.problem)


