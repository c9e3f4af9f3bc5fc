"""The SQL that makes a caller role of the row-level security wall (db/walls.py) and
gives it the schema's tables, for the migrations that add one (0006, 0009). PostgreSQL
only. Migrations replay this text on every new database: change it only in ways that
leave what an earlier migration made the same.
"""

from __future__ import annotations


def create(role: str) -> str:
    """The role (shared by every database of the server), and the connecting user a
    member of it, which SET ROLE needs."""
    return f"""
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN
        BEGIN
            CREATE ROLE {role} NOLOGIN;
        -- Another database of the same server migrating at the same moment made it.
        EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
        END;
    END IF;
    -- SET ROLE needs membership; superusers have it already.
    IF NOT pg_has_role(current_user, '{role}', 'MEMBER') THEN
        EXECUTE format('GRANT {role} TO %I', current_user);
    END IF;
END $$
"""


def grant(role: str) -> str:
    """The schema's tables and sequences, now and to come; never alembic_version."""
    return f"""
DO $$
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO {role}', current_schema());
    EXECUTE format(
        'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA %I TO {role}',
        current_schema());
    EXECUTE format('GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA %I TO {role}',
        current_schema());
    -- Tables of later migrations are usable by callers too; a test checks that every
    -- table with a project_id has its policy.
    EXECUTE format(
        'ALTER DEFAULT PRIVILEGES IN SCHEMA %I'
        ' GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {role}', current_schema());
    REVOKE ALL ON alembic_version FROM {role};
END $$
"""


def revoke(role: str) -> str:
    """What `grant` gave, taken back (a downgrade). The role itself is kept: other
    databases of the server may use it."""
    return f"""
DO $$
BEGIN
    EXECUTE format(
        'ALTER DEFAULT PRIVILEGES IN SCHEMA %I'
        ' REVOKE SELECT, INSERT, UPDATE, DELETE ON TABLES FROM {role}', current_schema());
    EXECUTE format('REVOKE ALL ON ALL SEQUENCES IN SCHEMA %I FROM {role}', current_schema());
    EXECUTE format('REVOKE ALL ON ALL TABLES IN SCHEMA %I FROM {role}', current_schema());
    EXECUTE format('REVOKE USAGE ON SCHEMA %I FROM {role}', current_schema());
END $$
"""
