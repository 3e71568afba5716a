#!/usr/bin/env bash
# Runs once, when the primary's data directory is first created
# (/docker-entrypoint-initdb.d of the postgres image).
#   - user app/app (scram-sha-256) owning database bench: what pgmux serves
#   - user replicator/replicator with REPLICATION, for the replica's pg_basebackup
set -euo pipefail
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres <<SQL
SET password_encryption = 'scram-sha-256';
CREATE ROLE app LOGIN PASSWORD 'app';
CREATE DATABASE bench OWNER app;
CREATE ROLE replicator LOGIN REPLICATION PASSWORD 'replicator';
SQL
# The image's pg_hba.conf allows "all" databases from anywhere, which does not
# cover replication connections: allow them for the replicator.
echo "host replication replicator all scram-sha-256" >> "$PGDATA/pg_hba.conf"
