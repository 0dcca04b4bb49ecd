"""The memory store inside the boundary: PostgreSQL + pgvector (docs/memory.md).

store.py (schema, writes, search, retention), pseudonym.py (tenant-scoped pseudonyms from
OpenBao transit), rights.py (erasure and export of one data subject), backup.py (pg_dump
generations, restore with erasures re-applied), api.py (the data-subject endpoints).
"""
