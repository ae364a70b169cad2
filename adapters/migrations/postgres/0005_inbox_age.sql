-- Forgetting processed inbox entries (`claim_inbound`, every sweep) is a range scan of this
-- index instead of a scan of the whole table, which held the write lock while it ran.
CREATE INDEX inbox_done_by_age ON inbox (done, received_at);
