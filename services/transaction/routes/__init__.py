"""Route modules of the transaction service: one APIRouter per resource, included by
create_app. Handlers reach the service through `request.app.state.svc`."""
