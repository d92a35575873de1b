"""IPython extension for jobber: run isolated jobs from a notebook and watch them live.

Load it with ``%load_ext jobber_magics`` (or list it in ``c.InteractiveShellApp.extensions``)::

    %jobber_cert ~/.jobber-demo/client.pem      # the identity that owns your jobs
    %%jobber_run --memory 2G --cpu 1 --name train
    python train.py
    %jobber_tail 3 -n 20        %jobber_stop 3        %jobber_jobs
    %jobber_queue train --parallel 2
    %%jobber_sweep --queue train lr=0.1,0.01 bs=32,64
    python train.py --lr {lr} --batch-size {bs}
    %%jobber_py --in X,y --out model --memory 2G     # a Python cell as a job
    model = fit(X, y)
    %jobber_fetch 7                                   # its outputs again, after a restart

Loading registers the magics and the displays: a ``jobber.Job`` shows as its live view
(status, charts, log, Stop button; ``%%jobber_run`` returns the Job, so its one output is
that view), with a static HTML card "as of" a time for readers without widgets; a sweep
shows as one live grid of its jobs; a ``jobber.Certificate`` shows as a card. ipywidgets is imported only when a view is first shown.

To have every kernel load it (so that after a restart ``%jobber_tail -f ID`` re-attaches
at once), add ``c.InteractiveShellApp.extensions = ["jobber_magics"]`` to
``~/.ipython/profile_default/ipython_kernel_config.py``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["JobWidget", "load_ipython_extension", "unload_ipython_extension"]

_HTML = "text/html"


def load_ipython_extension(ipython: Any) -> None:
    """Register the magics and the HTML displays (called by ``%load_ext jobber_magics``)."""
    import jobber
    from jobber_magics._connect import JobberConnectMagics
    from jobber_magics._display import certificate_html, job_html
    from jobber_magics._lifecycle import JobberLifecycleMagics
    from jobber_magics._magics import JobberMagics
    from jobber_magics._pymagics import JobberPyMagics
    from jobber_magics._sweep import JobberSweepMagics

    magics = JobberMagics(ipython)
    sweeps = JobberSweepMagics(ipython, magics)
    ipython.register_magics(magics)
    ipython.register_magics(JobberConnectMagics(ipython, magics))
    ipython.register_magics(JobberLifecycleMagics(ipython, magics))
    ipython.register_magics(JobberPyMagics(ipython, magics))
    ipython.register_magics(sweeps)
    formatter = ipython.display_formatter.formatters[_HTML]
    magics.replaced_formatters = {
        jobber.Job: formatter.for_type(jobber.Job, job_html),
        jobber.Certificate: formatter.for_type(jobber.Certificate, certificate_html),
    }
    bundles = ipython.display_formatter.mimebundle_formatter
    magics.replaced_bundles = {jobber.Job: bundles.for_type(jobber.Job, magics.job_bundle)}
    ipython.events.register("pre_run_cell", magics.pre_run_cell)
    ipython.events.register("post_run_cell", magics.post_run_cell)
    ipython.events.register("post_run_cell", sweeps.post_run_cell)


def unload_ipython_extension(ipython: Any) -> None:
    """Remove the magics and restore the displays (``%unload_ext jobber_magics``)."""
    from jobber_magics._connect import JobberConnectMagics
    from jobber_magics._lifecycle import JobberLifecycleMagics
    from jobber_magics._magics import JobberMagics
    from jobber_magics._pymagics import JobberPyMagics
    from jobber_magics._sweep import JobberSweepMagics

    manager = ipython.magics_manager
    for cls in (JobberMagics, JobberConnectMagics, JobberLifecycleMagics, JobberSweepMagics, JobberPyMagics):
        for kind, names in cls.magics.items():
            for name in names:
                manager.magics[kind].pop(name, None)
    manager.registry.pop(JobberConnectMagics.__name__, None)
    manager.registry.pop(JobberLifecycleMagics.__name__, None)
    manager.registry.pop(JobberPyMagics.__name__, None)
    sweeps = manager.registry.pop(JobberSweepMagics.__name__, None)
    magics = manager.registry.pop(JobberMagics.__name__, None)
    formatter = ipython.display_formatter.formatters[_HTML]
    for cls, previous in getattr(magics, "replaced_formatters", {}).items():
        formatter.pop(cls, None)
        if previous is not None:
            formatter.for_type(cls, previous)
    texts = ipython.display_formatter.formatters["text/plain"]
    for cls, previous in getattr(sweeps, "replaced_texts", {}).items():
        texts.pop(cls, None)
        if previous is not None:
            texts.for_type(cls, previous)
    bundles = ipython.display_formatter.mimebundle_formatter
    replaced = {**getattr(sweeps, "replaced_bundles", {}), **getattr(magics, "replaced_bundles", {})}
    for cls, previous in replaced.items():
        bundles.pop(cls, None)
        if previous is not None:
            bundles.for_type(cls, previous)
    callbacks = [] if magics is None else [("pre_run_cell", magics.pre_run_cell), ("post_run_cell", magics.post_run_cell)]
    callbacks += [] if sweeps is None else [("post_run_cell", sweeps.post_run_cell)]
    for event, callback in callbacks:
        try:
            ipython.events.unregister(event, callback)
        except ValueError:
            pass


def __getattr__(name: str) -> Any:
    # JobWidget needs ipywidgets: import it on first use, not when the extension loads.
    if name == "JobWidget":
        from jobber_magics._widget import JobWidget

        return JobWidget
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
