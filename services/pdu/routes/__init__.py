"""Route modules of the pdu service: one APIRouter per resource, included by create_app."""
