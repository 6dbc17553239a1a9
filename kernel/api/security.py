"""The guard on every route but /health: who is asking, and may they ask now."""

from __future__ import annotations

from fastapi import Request

from ..access import EVERYONE, current_access
from ..errors import Unauthorized
from ..hooks import InferenceEvent, current_client
from .auth import Principal
from .hub import login_redirect, wants_page
from .ratelimit import RateLimiter


async def guard(request: Request) -> Principal:
    """Authenticate (401) and admit under the rate limit (429); remember who asked and what
    they may do (a hub user's groups and scopes; everything for the engine's own keys)."""
    state = request.app.state
    principal: Principal
    if state.hub is not None:
        try:
            principal, access = await state.hub.authenticate(request.headers)
        except Unauthorized:
            if wants_page(request):  # a browser: to the hub's login, and back
                raise login_redirect(request, state.hub) from None
            raise
        state.quotas.admit(access)
    else:
        principal, access = state.auth.authenticate(authorization(request)), EVERYONE
    state.limiter.admit(principal.id)
    current_client.set(principal.id)
    current_access.set(access)
    return principal


def authorization(request: Request) -> str | None:
    """The ``Authorization`` header, or Anthropic's ``x-api-key`` as a bearer key."""
    found = request.headers.get("authorization")
    if not found and (key := request.headers.get("x-api-key")):
        return f"Bearer {key}"
    return found


class TokenCharge:
    """A hook plugin: charge each client's token budget with what its requests used."""

    def __init__(self, limiter: RateLimiter) -> None:
        self.limiter = limiter

    def on_inference_end(self, e: InferenceEvent) -> None:
        if e.client and e.stats is not None:
            s = e.stats  # the whole prompt: a cached prefix is reused, not free
            self.limiter.charge(e.client, s.prompt_eval_count + s.prompt_cached + s.eval_count)
