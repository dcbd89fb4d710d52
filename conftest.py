"""Repository-wide pytest plugins: fixtures that start real servers on free ports."""

pytest_plugins = ["tests.plugins.postgres", "tests.plugins.database", "tests.plugins.nginx"]
