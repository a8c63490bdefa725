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

-- client_days holds exactly the client_hours rows of the hours in
-- [client_days_from, client_days_to) (retention rows, Unix seconds of
-- hours), summed per client and day: the writer adds a completed hour's
-- rows to client_days and moves client_days_to past it, adds rows that
-- arrive late for hours in the range as it writes them, and, in a
-- database upgraded from schema 1, moves client_days_from back an hour at
-- a time, adding each older hour's rows. Nothing is copied here, so the
-- upgrade is instant whatever the database's size. A database without
-- rollups yet is complete from the start; the writer sets client_days_to
-- (and, for an upgraded database, client_days_from) to the current hour
-- when it first opens it.
INSERT INTO retention (name, cutoff)
SELECT 'client_days_from', -9223372036854775808 WHERE NOT EXISTS (SELECT 1 FROM client_hours);
