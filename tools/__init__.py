"""Commands built on everything else: artifacts, parity, deploy-local, the report, audit."""
