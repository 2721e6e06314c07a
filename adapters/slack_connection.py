"""How the Slack app reaches Slack: the tokens checked, the web client, HTTP mode or Socket Mode.

`check_credentials` refuses a token of the wrong kind before anything is asked; `identify`
asks Slack who the bot is (auth.test), and a refused token is one line naming the fix. The web
client waits out rate limits (429, Slack's Retry-After) a few times. HTTP mode is our aiohttp
server (AppRunner and TCPSite, so we stop it) with bolt's request translation at
`/slack/events`; Socket Mode is bolt's handler, the app token checked first (the handler would
retry a refused one forever). Each returns the function that stops it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack_events import NETWORK_ERRORS, BotIdentity, slack_error
from bot.events import ConfigError

log = logging.getLogger(__name__)

RATE_LIMIT_RETRIES = 3  # 429s waited out (Slack's Retry-After) before a call fails
Stop = Callable[[], Awaitable[None]]


def check_credentials(bot_token: str, app_token: str, signing_secret: str) -> None:
    """The tokens' shapes, before anything is asked of Slack."""
    where = "(README, Run on Slack)"
    if not bot_token.startswith("xoxb-"):
        raise ConfigError(
            "SLACK_BOT_TOKEN does not start with xoxb-: copy the Bot User OAuth Token from your app's "
            f"OAuth & Permissions page {where}."
        )
    if app_token and not app_token.startswith("xapp-"):
        raise ConfigError(
            "SLACK_APP_TOKEN does not start with xapp-: make an app-level token with the connections:write "
            f"scope (Basic Information, App-Level Tokens), or leave it empty for HTTP mode {where}."
        )
    if not app_token and not signing_secret:
        raise ConfigError(
            "neither SLACK_APP_TOKEN nor SLACK_SIGNING_SECRET is set: set SLACK_APP_TOKEN (xapp-) for Socket "
            f"Mode, or SLACK_SIGNING_SECRET (Basic Information, App Credentials) for HTTP mode {where}."
        )


async def identify(client: AsyncWebClient) -> BotIdentity:
    """Who the bot is (auth.test); a refused token is a ConfigError naming the fix."""
    try:
        response = await client.auth_test()
    except SlackApiError as exc:
        raise ConfigError(
            f"Slack refused SLACK_BOT_TOKEN ({slack_error(exc)}): copy the Bot User OAuth Token (xoxb-) from "
            "your app's OAuth & Permissions page into .env, and reinstall the app if it was revoked."
        ) from None
    except NETWORK_ERRORS as exc:
        raise ConfigError(
            f"cannot reach Slack's Web API at {client.base_url} ({slack_error(exc)}): check the network, "
            "or SLACK_API_URL."
        ) from None
    return BotIdentity(
        str(response["user_id"]),
        str(response.get("bot_id") or ""),
        str(response["team_id"]),
        str(response.get("team") or ""),
    )


async def http_mode(app: AsyncApp, host: str, port: int) -> Stop:
    """bolt behind our aiohttp server at /slack/events; the returned function stops it."""

    async def events(request: web.Request) -> web.Response:
        return await to_aiohttp_response(await app.async_dispatch(await to_bolt_request(request)))

    web_app = web.Application()
    web_app.router.add_post("/slack/events", events)
    runner = web.AppRunner(web_app, access_log=None, shutdown_timeout=5.0)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        await runner.cleanup()
        raise ConfigError(
            f"cannot listen on {host}:{port} ({exc.strerror or exc}): set MEMBOT_HTTP_PORT to a free port "
            "(or stop the program using it), or MEMBOT_HTTP_HOST to an address of this machine."
        ) from None
    log.info("Slack HTTP mode: events at http://%s:%d/slack/events", host, port)
    return runner.cleanup


async def socket_mode(app: AsyncApp, client: AsyncWebClient, app_token: str) -> Stop:
    """bolt's Socket Mode handler, connected; the returned function disconnects it."""
    try:  # asked here, so a refused token is one line (the handler would retry it forever)
        response = await client.apps_connections_open(app_token=app_token)
    except SlackApiError as exc:
        raise ConfigError(
            f"Slack refused SLACK_APP_TOKEN ({slack_error(exc)}): make an app-level token with the "
            "connections:write scope (Basic Information, App-Level Tokens) and turn Socket Mode on."
        ) from None
    except NETWORK_ERRORS as exc:
        raise ConfigError(
            f"cannot reach Slack at {client.base_url} for Socket Mode ({slack_error(exc)}): check the network."
        ) from None
    handler = AsyncSocketModeHandler(app, app_token, web_client=client)
    handler.client.wss_uri = str(response["url"])
    connecting = asyncio.create_task(handler.connect_async())  # type: ignore[no-untyped-call]
    log.info("Slack Socket Mode: connecting")

    async def stop() -> None:
        await handler.close_async()  # type: ignore[no-untyped-call]
        connecting.cancel()
        await asyncio.gather(connecting, return_exceptions=True)

    return stop


def web_client(token: str, base_url: str, session: aiohttp.ClientSession) -> AsyncWebClient:
    return AsyncWebClient(
        token=token,
        base_url=base_url,
        session=session,
        retry_handlers=[
            AsyncConnectionErrorRetryHandler(),
            AsyncRateLimitErrorRetryHandler(max_retry_count=RATE_LIMIT_RETRIES),
        ],
    )
