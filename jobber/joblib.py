"""jobber as a joblib backend: each task of ``joblib.Parallel`` runs as an isolated job.

    import joblib
    import jobber
    import jobber.joblib  # registers the backend "jobber" with joblib
    from sklearn.model_selection import GridSearchCV

    with joblib.parallel_config(backend="jobber", limits=jobber.Limits(memory="1G", cpu=1)):
        search = GridSearchCV(model, grid, n_jobs=4).fit(X, y)   # each fit a job, 4 at once

Everything that uses joblib (scikit-learn's searches, cross-validation and ensembles, or
your own ``Parallel(...)(delayed(f)(x) for x in xs)``) then runs each task in a process of
its own, in its own cgroup, within the limits: a fit that needs too much memory is killed
alone and its error reaches the caller, instead of the kernel dying. The jobs are ordinary
jobber jobs (label ``joblib:`` and the function's name): watch them live, list them
(``cert.get_jobs(label="joblib:_fit_and_score")``), remove them when done.

``parallel_config(backend="jobber", ...)`` takes ``session=`` (a ``jobber.Certificate`` or a
``jobber.connect(...)`` session; default ``$JOBBER_CERT``), ``limits=`` (a ``jobber.Limits``),
and the options of ``cert.executor``: ``queue=``, ``timeout=``, ``retries=``,
``oom_growth=``, ``label=``, ``env=``, ``backend=``, ... ``n_jobs`` is how many jobs run at
once. Arguments and results travel pickled in each job's directory (cloudpickle; no shared
memory): a large data set is better read from a file inside the function.

Needs joblib (``pip install 'jobber[joblib]'``); ``import jobber`` never imports it.
"""

from jobber._joblib import JobberBackend, register

__all__ = ["JobberBackend", "register"]

register()
