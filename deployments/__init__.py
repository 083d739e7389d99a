"""Ray Serve deployments: one module per model deployment, each a class and its engines."""
