"""The team collector: an HTTP service that stores every installation's records, checks their
hash chains, and answers team lookups under per-token roles.

Modules: records (validating uploads), chain (continuity links), storage + storage_sqlite +
storage_pg (the database, the collector's only state), auth (tokens and roles), app (the ASGI
application), openapi (the API description), cli (`serve`, `token create`), and client (the
API's client, used by kubectl_record.sync; it needs none of the server's dependencies).
"""
