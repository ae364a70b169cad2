-- The id of the key a record's hash is an HMAC under ([audit] key_id); '' for a plain SHA-256
-- hash (records written without a key, and every record before this migration).
ALTER TABLE audit ADD COLUMN key_id TEXT NOT NULL DEFAULT '';
