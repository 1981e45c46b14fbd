"""Internal API contracts: one module per callee service (paths, shapes, typed client).

Both sides use the same module: the service mounts its routes at these paths and declares
these shapes in its OpenAPI document; callers use the typed client. Routes change only by
adding new ones.
"""
