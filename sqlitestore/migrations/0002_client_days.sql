-- Schema 2: daily rollups per client, so that windows of many hours read
-- one row per client and day (plus hourly rows for a partial first day)
-- instead of one per client and hour. They carry what anomalies and top
-- talkers need, not the histograms and tallies (statistics read those from
-- the hours table). A row's day is the Unix time in seconds of the start
-- of its UTC day; it sums the client's client_hours rows of that day.
CREATE TABLE client_days (
    day             INTEGER NOT NULL,  -- Unix seconds of the UTC day's start
    client          BLOB    NOT NULL,
    requests        INTEGER NOT NULL,
    drops           INTEGER NOT NULL,
    rate_limited    INTEGER NOT NULL,
    kod             INTEGER NOT NULL,
    offset_count    INTEGER NOT NULL,
    offset_min_ns   INTEGER,
    offset_max_ns   INTEGER,
    delay_count     INTEGER NOT NULL,
    delay_min_ns    INTEGER,
    delay_max_ns    INTEGER,
    PRIMARY KEY (day, client)
) WITHOUT ROWID;
CREATE INDEX client_days_client ON client_days (client, day);

-- Daily rows exist, complete, from the day recorded as client_days_from
-- (Unix seconds of a UTC day's start). A new database has them from the
-- start. A database upgraded from schema 1 is not backfilled here (that
-- would sort every hourly row while the server waits to start): its daily
-- rows start with the first whole UTC day after the upgrade, and queries
-- read hourly rows for the days before.
INSERT INTO retention (name, cutoff)
SELECT 'client_days_from', CASE
    WHEN EXISTS (SELECT 1 FROM client_hours) THEN (unixepoch() / 86400 + 1) * 86400
    ELSE -9223372036854775808 END;
