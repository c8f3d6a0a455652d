"""driftbench's public Python API: `driftbench.client.Client`, the HTTP client for
notebooks and scripts (the service itself lives in `app` and `workers`)."""
