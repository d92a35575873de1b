"""The remote backend: jobs on a jobber server, reached over HTTPS with mutual TLS.

``session.py`` is the session ``jobber.connect`` returns, and the one boundary where
network and TLS errors become jobber's; ``backend.py`` the job verbs over the API, which
a remote ``jobber.Job`` holds.
"""
