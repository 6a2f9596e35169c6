"""Mount the web app on the service (called by ``proxy.app.create_app``)."""

from __future__ import annotations

from collections.abc import Collection

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession

from billing.enums import Role
from proxy.exceptions import ConfigError
from proxy.keys import CONFIG, READ_SESSIONS, WEB_LIVE, WEB_SYNC, WEB_TEMPLATES, WEB_THROTTLE

from . import (
    pages_admin,
    pages_cards,
    pages_delegate,
    pages_integrations,
    pages_signin,
    pages_staff,
    pages_usage,
    pages_user,
    passwords,
    sessions,
)
from .live import LiveFeed
from .middleware import web_middleware
from .render import environment, static_routes
from .syncrun import SyncProgress
from .throttle import LoginThrottle

ROUTE_NAME_PREFIX = "web."


def is_web_route(route: web.AbstractRoute) -> bool:
    """A page of the web app (not the JSON API): the API's tests leave these out."""
    name = route.name
    return name is not None and name.startswith(ROUTE_NAME_PREFIX)


def setup_web(app: web.Application) -> None:
    """The pages' routes (named ``web.*``) and their middleware, inside the API's."""
    config = app[CONFIG].web
    if "pam" in config.auth and (why := passwords.pam_available()) is not None:
        raise ConfigError(f"web.auth pam: {why}")
    app[WEB_TEMPLATES] = environment()
    app[WEB_THROTTLE] = LoginThrottle(config.login_attempts, config.login_window_secs)
    app.middlewares.append(web_middleware)

    def read_session() -> AsyncSession:  # the app's sessions exist once it has started
        return app[READ_SESSIONS]()

    async def live_roles(session: AsyncSession, ids: Collection[int]) -> dict[int, Role]:
        return await sessions.live_roles(session, ids, config)

    app[WEB_LIVE] = feed = LiveFeed(read_session, config.poll_secs, live_roles)
    app.on_shutdown.append(feed.close)
    app[WEB_SYNC] = sync = SyncProgress()
    app.on_shutdown.append(sync.stop)
    app.router.add_routes(pages_signin.routes())
    app.router.add_routes(pages_user.routes())
    app.router.add_routes(pages_delegate.routes())
    app.router.add_routes(pages_cards.routes())
    app.router.add_routes(pages_staff.routes())
    app.router.add_routes(pages_admin.routes())
    app.router.add_routes(pages_integrations.routes())
    app.router.add_routes(pages_usage.routes())
    app.router.add_routes(static_routes())
