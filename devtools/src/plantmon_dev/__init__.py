"""Developer tooling: start real PostgreSQL, nginx, Prometheus and the services locally.

Used by ``task up`` (the whole stack without Docker) and by the test fixtures, so the tests
start the pipeline exactly the way the run command does.
"""
