"""plantmon's database schema: ordered SQL migrations and the runner that applies them."""

from plantmon_db.migrate import ROLES, Migration, StoragePath, load_migrations, migrate

__all__ = ["ROLES", "Migration", "StoragePath", "load_migrations", "migrate"]
