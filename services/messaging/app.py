"""The messaging service: the domain API (rooms, events, membership, subscriptions).

Writes go down to the pdu service; the event stream and subscriptions are read and kept
through the transaction service's storage API. `create_app(settings)` builds a fresh app
with no module-level state.
"""
from __future__ import annotations

import socket
from contextlib import asynccontextmanager

from fastapi import Query, Request

from services.messaging.auth import ApiTokenMiddleware, TokenSource
from services.messaging.delivery import Delivery
from services.messaging.devices import Devices
from services.messaging.ephemeral import Ephemeral
from services.messaging.routes import devices as devices_routes
from services.messaging.routes import admin as admin_routes
from services.messaging.routes import dashboard as dashboard_routes
from services.messaging.routes import ephemeral as ephemeral_routes
from services.messaging.routes import knock as knock_routes
from services.messaging.routes import directory as directory_routes
from services.messaging.routes import profiles as profiles_routes
from services.messaging.routes import spaces as spaces_routes
from shared.internal import InternalClient
from shared.metrics import Metrics
from shared.contracts import messaging as c
from shared.contracts.pdu import Backfill, BackfillResponse, PduClient
from shared.contracts.transaction import TransactionClient
from shared.errors import json_response
from shared.routing import BodyLimitMiddleware, JsonBodyMiddleware, new_app, serve_lean
from shared.settings import Settings


class MessagingService:
    def __init__(self, settings: Settings, *, pdu_client=None, transaction_client=None,
                 callback_http=None, transport_client=None, metrics: Metrics | None = None):
        secret = settings.secret()
        self.data_dir = settings.data_dir
        self.metrics = metrics or Metrics("messaging")
        self.pdu = pdu_client or PduClient(settings.pdu_url, secret)
        self.tx = transaction_client or TransactionClient(settings.transaction_url, secret)
        # only for the operator's views (its /metrics and /health)
        self.transport = transport_client or InternalClient(settings.transport_url, secret)
        owner = f"{socket.gethostname()}:{settings.port}" if settings.port else None
        self.delivery = Delivery(self.tx, http=callback_http, owner=owner, metrics=self.metrics)
        self.ephemeral = Ephemeral(self.pdu, self.tx, settings.server_name)
        self.devices = Devices(self.pdu, self.tx, settings.server_name)

    async def stop(self):
        await self.delivery.stop()
        await self.pdu.aclose()
        await self.tx.aclose()
        await self.transport.aclose()


def create_app(settings: Settings, **clients):
    metrics = Metrics("messaging")

    @asynccontextmanager
    async def lifespan(app):
        svc = MessagingService(settings, metrics=metrics, **clients)
        app.state.svc = svc
        await svc.delivery.start()
        try:
            yield
        finally:
            await svc.stop()

    # The domain API is the homeserver's own, reachable by its other parts: no secret.
    app = new_app("fedstack-messaging", None, lifespan=lifespan, metrics=metrics,
                  metrics_route=False)     # its /metrics is the combined view (admin routes)
    app.state.settings = settings
    app.state.origin_rates = admin_routes.OriginRates()
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(JsonBodyMiddleware)
    app.add_middleware(ApiTokenMiddleware, tokens=TokenSource(settings))   # outermost

    def svc(request: Request) -> MessagingService:
        return request.app.state.svc

    @app.post(c.ROOMS, tags=["rooms"])
    async def create_room(body: c.CreateRoomRequest, request: Request) -> dict:
        return await directory_routes.create_room(svc(request), settings.server_name, body)

    @app.post(c.JOIN, tags=["rooms"])
    async def join(room_id: str, body: c.JoinRequest, request: Request) -> dict:
        room_id, servers = await directory_routes.join_target(svc(request), settings.server_name,
                                                             room_id, body.servers)
        return await svc(request).pdu.join(room_id, dict(body.model_dump(), servers=servers))

    @app.post(c.INVITE, tags=["rooms"])
    async def invite(room_id: str, body: c.InviteRequest, request: Request) -> dict:
        return await svc(request).pdu.invite(room_id, body.model_dump())

    @app.post(c.LEAVE, tags=["rooms"])
    async def leave(room_id: str, body: c.LeaveRequest, request: Request) -> dict:
        return await svc(request).pdu.leave(room_id, body.model_dump())

    def _moderation(path: str, membership: str):
        async def moderate(room_id: str, body: c.ModerationRequest, request: Request) -> dict:
            content = {"membership": membership}
            if body.reason:
                content["reason"] = body.reason
            return await svc(request).pdu.send(room_id, {
                "sender": body.sender, "type": "m.room.member", "content": content,
                "state_key": body.user_id})
        app.add_api_route(path, moderate, methods=["POST"], tags=["rooms"],
                          name=path.rsplit("/", 1)[1])

    _moderation(c.KICK, "leave")
    _moderation(c.BAN, "ban")
    _moderation(c.UNBAN, "leave")

    @app.post(c.EVENTS, tags=["events"])
    async def send(room_id: str, body: c.SendRequest, request: Request) -> dict:
        return await svc(request).pdu.send(room_id, body.model_dump())

    @app.post(c.EVENTS_BATCH, tags=["events"], response_model=c.SendBatchResponse)
    async def send_batch(room_id: str, body: c.SendBatchRequest, request: Request):
        """Up to 1,000 events in one call, in order; per event its event_id or its error."""
        return json_response(await svc(request).pdu.send_batch(room_id, body.model_dump()))

    @app.get(c.EVENTS, tags=["events"], response_model=c.EventsPage)
    async def events(room_id: str, request: Request, after: int = Query(0, ge=0),
                     limit: int = Query(100, ge=1, le=1000)):
        page = await svc(request).tx.stream(after, limit, room_id)
        return json_response({"events": [dict(e["event"], position=e["position"]) for e in page["events"]],
                              "next": page["next"]})

    @app.get(c.STATE, tags=["rooms"])
    async def state(room_id: str, request: Request) -> dict:
        return await svc(request).pdu.state(room_id)

    @app.post(c.BACKFILL, tags=["events"], response_model=BackfillResponse)
    async def backfill(room_id: str, body: Backfill, request: Request):
        """History from before our server joined, fetched from a server in the room; these
        events are not delivered to subscriptions."""
        return json_response(await svc(request).pdu.backfill(room_id, body.model_dump(by_alias=True)))

    @app.post(c.SUBSCRIPTIONS, tags=["subscriptions"], response_model=c.SubscriptionResponse)
    async def subscribe(body: c.SubscriptionRequest, request: Request):
        s = svc(request)
        sub = await s.tx.add_subscription(body.model_dump())
        s.delivery.add(sub)   # other replicas pick it up on their next refresh
        return {"subscription_id": sub["subscription_id"], "hs_token": sub["hs_token"]}

    @app.delete(c.SUBSCRIPTION, tags=["subscriptions"])
    async def unsubscribe(subscription_id: str, request: Request) -> dict:
        s = svc(request)
        await s.tx.delete_subscription(subscription_id)
        s.delivery.remove(subscription_id)
        return {}

    app.include_router(ephemeral_routes.router)
    app.include_router(knock_routes.router)
    app.include_router(profiles_routes.router)
    app.include_router(directory_routes.router)
    app.include_router(spaces_routes.router)
    app.include_router(admin_routes.router)
    app.include_router(dashboard_routes.router)
    app.include_router(devices_routes.router)
    serve_lean(app, send, send_batch)   # the per-event routes
    return app
