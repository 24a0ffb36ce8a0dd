"""Ray Serve deployments over :mod:`arfm.generate` (the one generation API), request/response schemas and the
inference-benchmark client. Nothing here is imported by the platform below it."""
