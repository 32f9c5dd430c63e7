"""Reliability and security checks of the running stacks: the shared bad-input matrix,
fault injection (killed workers, SIGTERM under load, slow clients), soak runs and the
dependency audit. `python -m reliability --help` lists the commands."""
