"""The web app at ``/``: sign-in, user pages, the ticket queue, admin pages.

Server-rendered (Jinja2, autoescaped), phone-sized first, one stylesheet and
one script of our own, a strict Content-Security-Policy. Handlers are thin:
they reuse the API's queries and operations (proxy/api/, proxy/pipeline/)
with the signed-in user as the principal. ``setup.setup_web`` mounts it.

Modules: ``passwords`` (scrypt), ``sessions`` (server-side, in the database),
``csrf``, ``throttle`` (sign-in attempts), ``auth`` (principal, roles,
sign-in), ``render`` (templates, headers, static files), ``middleware``,
``pages_*`` (one per area), ``cli`` (``proxyprint user passwd``).

This package's ``__init__`` imports nothing: ``proxy.keys`` imports
``throttle`` from here, and the pages import ``proxy.keys``.
"""
