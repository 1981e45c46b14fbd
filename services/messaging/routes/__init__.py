"""Route modules of the messaging service (the domain API): one APIRouter per resource,
included by create_app. Handlers reach the service through `request.app.state.svc`."""
