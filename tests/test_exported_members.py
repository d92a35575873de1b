"""The public API is exactly what jobber/__init__.py names (httpx's test of the same name)."""

import inspect

import jobber

CONTRACT = {  # docs/api.md: tests outside this repo use these names
    "Certificate", "CertificateError", "Job", "JobError", "JobNotFound", "JobStatus",
    "JobberError", "Limits", "connect", "get_client_certificates", "Executor", "RemoteError",
}
# Beyond the contract: jobber_magics needs these, and may use only jobber.__all__
# (tests/test_architecture.py).
FOR_THE_MAGICS = {"ca_hint", "default_root", "doctor", "format_elapsed", "format_size", "last_lines", "last_runs",
                  "oversubscription", "JobFlags",
                  "Session", "Sweep"}


def test_all_is_complete_and_exact():
    public = {name for name in vars(jobber) if not name.startswith("_")}
    submodules = {"cli", "joblib"}  # importable submodules land in the namespace once imported
    assert set(jobber.__all__) == public - submodules
    assert len(jobber.__all__) == len(set(jobber.__all__))


def test_contract_names_are_exported():
    assert CONTRACT <= set(jobber.__all__)
    assert FOR_THE_MAGICS <= set(jobber.__all__)


def test_every_exported_member_is_documented_and_from_jobber():
    for name in jobber.__all__:
        member = getattr(jobber, name)
        assert member.__doc__, name
        assert member.__module__.startswith("jobber"), name


def test_every_exported_function_has_a_google_style_docstring():
    for name in jobber.__all__:
        member = getattr(jobber, name)
        if not inspect.isfunction(member):
            continue
        signature = inspect.signature(member)
        if signature.parameters:
            assert "\n    Args:\n" in member.__doc__, f"jobber.{name}: document its arguments under Args:"
        if signature.return_annotation not in (None, "None"):
            assert "\n    Returns:\n" in member.__doc__, f"jobber.{name}: say what it returns under Returns:"


def test_exception_tree():
    assert issubclass(jobber.CertificateError, jobber.JobberError)
    assert issubclass(jobber.JobNotFound, jobber.CertificateError)
    assert issubclass(jobber.JobNotFound, LookupError)
    assert issubclass(jobber.JobError, jobber.JobberError)
    assert issubclass(jobber.LimitError, jobber.JobError)
    assert issubclass(jobber.LimitError, ValueError)
    assert issubclass(jobber.RemoteError, jobber.JobError)


def test_the_executor_is_a_concurrent_futures_executor():
    import concurrent.futures

    assert issubclass(jobber.Executor, concurrent.futures.Executor)
