-- Each inbox row in one index, not two: pending rows (taken over by lease) in one, processed
-- rows (forgotten by age) in the other. A command answered at once is recorded processed and
-- touches only the second; marking a row done moves it from the first to the second. Fewer
-- index pages written per received command on the acknowledgement's hot path.
DROP INDEX inbox_pending;
DROP INDEX inbox_done_by_age;
CREATE INDEX inbox_pending ON inbox (lease_until) WHERE done = 0;
CREATE INDEX inbox_done_by_age ON inbox (received_at) WHERE done = 1;
