"""``python -u warm_boot.py FD``: the warm launcher's start (see ``warm.py``).

FD is its end of the socket pair its starter made. It forks at once and the first process
exits, so that the warm launcher is nobody's child and its starter waits only for an
interpreter's start; requests wait in the pair meanwhile. Then jobber's packages are
entered without their ``__init__`` (jobber's loads cryptography), as the supervisor does,
and the loop begins.
"""

import os
import socket
import sys
import types

del sys.path[0]  # this file's directory: its modules must not shadow a job's
child = os.fork()
if child:
    os.write(1, f"{child}\n".encode())  # the starter keeps it (a look at its warm launcher)
    os._exit(0)
control = socket.socket(fileno=int(sys.argv[1]))
devnull = os.open(os.devnull, os.O_RDWR)
for fd in (0, 1, 2):
    os.dup2(devnull, fd)
os.close(devnull)
_package = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
for _name in ("jobber", "jobber._backends", "jobber._backends.local"):
    _module = types.ModuleType(_name)
    _module.__path__ = [os.path.join(_package, *_name.split("."))]
    sys.modules[_name] = _module

from jobber._backends.local.warm_serve import serve  # noqa: E402

serve(control)
