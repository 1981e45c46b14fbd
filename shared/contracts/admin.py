"""Internal routes behind the messaging API's admin routes (operators' views and actions).

The transaction service answers for destinations and subscriptions (it owns the queues
and positions), the pdu service for rooms (it holds room state). Shapes:

- DESTINATIONS: {"destinations": [{destination, queued, oldest_age_s, last_success_ts,
  failures, retry_at, retry_interval, in_flight}]}; `retry_at` 0 when not backing off,
  times in seconds since the epoch.
- DESTINATION_RETRY: {} after the backoff was dropped and a send started.
- SUBSCRIPTIONS: {"head": int, "subscriptions": [{subscription_id, url, room_id, types,
  position, lag}]}.
- ROOMS: {"rooms": [{room_id, room_version, extremities, members: {server: joined count}}]}.
"""
from __future__ import annotations

TX = "/_internal/transaction/v1/admin"
DESTINATIONS = TX + "/destinations"
DESTINATION_RETRY = TX + "/destinations/{destination}/retry"
SUBSCRIPTIONS = TX + "/subscriptions"
ROOMS = "/_internal/pdu/v1/admin/rooms"

# The messaging API's admin routes (behind the API token like every domain API route).
API = "/v1/admin"
API_STATUS = API + "/status"
API_DESTINATIONS = API + "/destinations"
API_DESTINATION_RETRY = API + "/destinations/{destination}/retry"
API_ROOMS = API + "/rooms"
API_ORIGINS = API + "/origins"
API_SUBSCRIPTIONS = API + "/subscriptions"
METRICS = "/metrics"        # the homeserver's combined view on the messaging port
