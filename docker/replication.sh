#!/bin/bash
# The primary's replication role and its access rule, made once at its first start.
set -euo pipefail
psql -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d "$POSTGRES_DB" \
  -c "CREATE ROLE replicator WITH REPLICATION LOGIN PASSWORD 'replicate'"
echo "host replication replicator all scram-sha-256" >> "$PGDATA/pg_hba.conf"
