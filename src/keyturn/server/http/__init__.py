"""HTTP primitives on the raw ASGI interface, shared by the Starlette handlers and the gateway."""
