"""Ray Serve: the TorchScript model in a Serve deployment with @serve.batch, behind Serve's
HTTP proxy on TF Serving's REST routes (launch.py is the plugin, server.py the process it
starts, deployment.py the replica)."""
