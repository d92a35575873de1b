"""``jobber serve``: the HTTPS API (TLS 1.3, client certificates) over the same library.

``app.py`` builds and runs the aiohttp application, ``tls.py`` the TLS context and the
per-connection identity, ``routes.py`` the /v1 endpoints, ``watch.py`` the shared inotify
behind every follow, ``openapi.py`` the API's document and bounds. What the middlewares
and the routes share sits below both: ``state.py`` (the config and the app's keys) and
``errors.py`` (``ApiError`` and the JSON error body).
"""
