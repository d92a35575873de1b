"""``python -u warm_boot.py SOCKET_NAME``: the warm launcher's start (see ``warm.py``).

It binds the socket first, with nothing but the standard library loaded, then forks: the
starter waits only for that first process's exit, and a request that comes while the
rest loads waits in the socket's backlog rather than starting its job cold. Then jobber's
packages are entered without their ``__init__`` (jobber's loads cryptography), as the
supervisor does, and the loop begins.
"""

import os
import socket
import sys
import types

del sys.path[0]  # this file's directory: its modules must not shadow a job's
listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
try:
    listener.bind("\0" + sys.argv[1])
except OSError:
    sys.exit(0)  # another one serves this name
listener.listen(128)
if os.fork():
    os._exit(0)
devnull = os.open(os.devnull, os.O_RDWR)
for fd in (0, 1, 2):
    os.dup2(devnull, fd)
os.close(devnull)
os.chdir("/")  # pins no directory (a test's, a notebook's) for as long as it lives
_package = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
for _name in ("jobber", "jobber._backends", "jobber._backends.local"):
    _module = types.ModuleType(_name)
    _module.__path__ = [os.path.join(_package, *_name.split("."))]
    sys.modules[_name] = _module

from jobber._backends.local.warm_serve import serve  # noqa: E402

serve(listener)
