"""IPython extension for jobber: run isolated jobs from a notebook and watch them live.

Load it with ``%load_ext jobber_magics`` (or list it in ``c.InteractiveShellApp.extensions``)::

    %jobber_cert ~/.jobber-demo/client.pem      # the identity that owns your jobs
    %%jobber_run --memory 2G --cpu 1 --name train
    python train.py
    %jobber_tail 3 -n 20        %jobber_stop 3        %jobber_jobs

Loading registers the magics and HTML displays for ``jobber.Job`` and
``jobber.Certificate``; ipywidgets is imported only when a live view is first shown.
"""

from __future__ import annotations

from typing import Any

__all__ = ["JobWidget", "load_ipython_extension", "unload_ipython_extension"]

_HTML = "text/html"


def load_ipython_extension(ipython: Any) -> None:
    """Register the magics and the HTML displays (called by ``%load_ext jobber_magics``)."""
    import jobber
    from jobber_magics._display import certificate_html, job_html
    from jobber_magics._magics import JobberMagics

    magics = JobberMagics(ipython)
    ipython.register_magics(magics)
    formatter = ipython.display_formatter.formatters[_HTML]
    magics.replaced_formatters = {
        jobber.Job: formatter.for_type(jobber.Job, job_html),
        jobber.Certificate: formatter.for_type(jobber.Certificate, certificate_html),
    }


def unload_ipython_extension(ipython: Any) -> None:
    """Remove the magics and restore the displays (``%unload_ext jobber_magics``)."""
    from jobber_magics._magics import JobberMagics

    manager = ipython.magics_manager
    for kind, names in JobberMagics.magics.items():
        for name in names:
            manager.magics[kind].pop(name, None)
    magics = manager.registry.pop(JobberMagics.__name__, None)
    formatter = ipython.display_formatter.formatters[_HTML]
    for cls, previous in getattr(magics, "replaced_formatters", {}).items():
        formatter.pop(cls, None)
        if previous is not None:
            formatter.for_type(cls, previous)


def __getattr__(name: str) -> Any:
    # JobWidget needs ipywidgets: import it on first use, not when the extension loads.
    if name == "JobWidget":
        from jobber_magics._widget import JobWidget

        return JobWidget
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
