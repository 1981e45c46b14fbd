"""Routers of the transport service that create_app includes."""
