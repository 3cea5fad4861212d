"""The gateway's hot routes: one implementation each, reached by two dispatchers.

`answers` computes each route's answer without I/O, `endpoints` holds the raw-ASGI
endpoint objects the Starlette routes list, and `router.ExactRoutes` hands the same
objects their requests by an exact ``(method, path)`` lookup inside the request
telemetry, without Starlette's regex routing and request objects.
"""
