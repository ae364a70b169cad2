-- SQLite's 0009 rebuilds its inbox as a WITHOUT ROWID table; PostgreSQL tables have no rowid,
-- so there is nothing to change here (the migration keeps both stores' versions in step).
SELECT 1;
