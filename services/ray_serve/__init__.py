"""Ray Serve: the TorchScript model in a Serve deployment with @serve.batch, behind Ray's
HAProxy ingress (or Serve's Python proxy, its default) on TF Serving's REST routes
(launch.py is the plugin, server.py the process it starts, deployment.py the replica)."""
