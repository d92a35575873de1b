"""``%jobber_connect``: run jobs on a jobber server (over mTLS) instead of this host, or back.

It sets the session of the main magics (`JobberMagics`), which every magic acts on, so
all of them then work with the server's jobs (or this host's again).
"""

from __future__ import annotations

import os
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments

import jobber
from jobber_magics._magics import JobberMagics, expanded_path, parse_options, user_errors

__all__ = ["JobberConnectMagics"]


@magics_class
class JobberConnectMagics(Magics):
    """Choose where jobs run, a jobber server or this host, for the main magics' session."""

    def __init__(self, shell: Any, main: JobberMagics) -> None:
        super().__init__(shell)
        self._main = main

    @magic_arguments()
    @argument("url", nargs="?", help="the jobber server, e.g. https://jobs.example.org:8443 "
              "(default: $JOBBER_SERVER)")
    @argument("--cert", metavar="C", help="your client certificate, PEM (default: $JOBBER_CERT)")
    @argument("--key", metavar="K", help="its private key, PEM (default: $JOBBER_KEY)")
    @argument("--ca", metavar="CA", help="the CA of the server's certificate (default: $JOBBER_CA, "
              "else the system's CAs)")
    @argument("--local", action="store_true", help="run jobs on this host again")
    @line_magic
    @user_errors
    def jobber_connect(self, line: str) -> None:
        """Run jobs on a jobber server (over mTLS) instead of this host, or back with --local.

        Every other magic then works with the server's jobs.
        """
        args = parse_options(self.jobber_connect, line)
        if args.local:
            if args.url or args.cert or args.key or args.ca:
                raise UsageError("--local takes no URL, --cert, --key or --ca: it goes back to this host")
            identity = self._main.use_this_host()
            print("Jobs now run on this host" + (f" as {identity.subject}." if identity else
                                                 ": choose an identity with %jobber_cert PATH."))
            return
        # The same defaults as the jobber command line.
        url = args.url or os.environ.get("JOBBER_SERVER")
        cert = args.cert or os.environ.get("JOBBER_CERT")
        key = args.key or os.environ.get("JOBBER_KEY")
        ca = args.ca or os.environ.get("JOBBER_CA")
        if not url:
            raise UsageError("give the server's URL: %jobber_connect https://HOST:PORT --cert me.pem "
                             "--key me.key --ca ca.pem (or set $JOBBER_SERVER; --local for this host)")
        if not cert or not key:
            raise UsageError("%jobber_connect needs your certificate and its key: pass --cert C --key K "
                             "(or set $JOBBER_CERT and $JOBBER_KEY)")
        session = jobber.connect(url, cert=expanded_path(cert), key=expanded_path(key), ca=ca and expanded_path(ca))
        self._main.session = session
        print(f"Jobs now run on {session.url} as {session.subject}.")
