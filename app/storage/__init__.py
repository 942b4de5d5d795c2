"""SQLAlchemy storage: schema, repository (versions, history, search index), migrations."""
