-- Schema 1 of the ntpexp observation store. docs/fields.md describes every
-- column. Times are Unix nanoseconds (INTEGER) unless named *_s; addresses
-- are BLOBs of 4 (IPv4) or 16 (IPv6) bytes, so they are compact, compare
-- bytewise, and a prefix is a BETWEEN range on an index.

-- One row per request that reached the parser, answered or dropped.
CREATE TABLE observations (
    id              INTEGER PRIMARY KEY,
    time_ns         INTEGER NOT NULL,  -- T2, server receive time
    client          BLOB    NOT NULL,  -- 4 or 16 bytes, after address_mode
    client_port     INTEGER NOT NULL,
    local           BLOB,              -- 4 or 16 bytes; NULL when unknown
    local_port      INTEGER NOT NULL,
    length          INTEGER NOT NULL,  -- request bytes
    reply_length    INTEGER NOT NULL,  -- reply bytes, 0 when none sent
    leap            INTEGER NOT NULL,
    version         INTEGER NOT NULL,
    mode            INTEGER NOT NULL,
    stratum         INTEGER NOT NULL,
    poll            INTEGER NOT NULL,
    precision       INTEGER NOT NULL,
    root_delay      INTEGER NOT NULL,  -- raw NTP short (16.16 s)
    root_dispersion INTEGER NOT NULL,  -- raw NTP short (16.16 s)
    ref_id          INTEGER NOT NULL,  -- raw 32 bits
    reference       INTEGER NOT NULL,  -- raw 64-bit NTP timestamps stored as
    origin          INTEGER NOT NULL,  -- the int64 with the same bits
    receive         INTEGER NOT NULL,
    transmit        INTEGER NOT NULL,
    server_transmit INTEGER NOT NULL,  -- T3 of the reply, 0 when none sent
    processing_ns   INTEGER NOT NULL,
    drop_reason     INTEGER NOT NULL,  -- ntp.DropReason, 0 = answered
    kod             INTEGER NOT NULL,  -- 1 when a RATE kiss-o'-death was sent
    method          INTEGER NOT NULL,  -- ntp.OffsetMethod: 0 none, 1 apparent, 2 exchange
    offset_ns       INTEGER,           -- NULL when method = 0
    delay_ns        INTEGER,           -- NULL unless method = 2
    interleaved     INTEGER NOT NULL,
    implementation  INTEGER NOT NULL,  -- ntp.Implementation
    ext_fields      INTEGER NOT NULL,  -- number of extension fields
    mac_length      INTEGER NOT NULL   -- bytes of MAC, 0 when none
);
CREATE INDEX observations_time ON observations (time_ns);
CREATE INDEX observations_client_time ON observations (client, time_ns);

-- One row per client address, merged per batch.
CREATE TABLE clients (
    client              BLOB    NOT NULL PRIMARY KEY,
    first_seen_ns       INTEGER NOT NULL,
    last_seen_ns        INTEGER NOT NULL,
    requests            INTEGER NOT NULL,
    drops               INTEGER NOT NULL,
    last_version        INTEGER NOT NULL,  -- of the newest request
    last_mode           INTEGER NOT NULL,
    last_poll           INTEGER NOT NULL,
    last_implementation INTEGER NOT NULL,
    last_local          BLOB,
    last_offset_ns      INTEGER,           -- newest known offset (method != 0)
    last_method         INTEGER NOT NULL DEFAULT 0,  -- its method, 0 if never known
    last_offset_at_ns   INTEGER,           -- when it was observed
    last_delay_ns       INTEGER,           -- newest known delay (method = 2)
    last_delay_at_ns    INTEGER,
    -- Extremes and counts over every request ever seen (not windowed).
    -- Anomaly queries read them to skip clients that never stood out, and
    -- use them instead of the client's rollups when the window holds the
    -- client's whole history.
    min_offset_ns       INTEGER,           -- smallest offset seen, NULL if none
    max_offset_ns       INTEGER,           -- largest offset seen
    max_delay_ns        INTEGER,           -- largest delay seen
    offset_count        INTEGER NOT NULL DEFAULT 0, -- requests with an offset
    delay_count         INTEGER NOT NULL DEFAULT 0, -- requests with a delay
    rate_limited        INTEGER NOT NULL DEFAULT 0, -- requests dropped by the rate limit
    kod                 INTEGER NOT NULL DEFAULT 0  -- RATE kiss-o'-death replies sent
) WITHOUT ROWID;
CREATE INDEX clients_last_seen ON clients (last_seen_ns);

-- One row per client and hour, merged per batch; kept longer than raw rows.
-- offset_hist and delay_hist are sparse log-scale histograms of |offset|
-- and delay; tallies counts requests by version, mode, implementation,
-- drop reason and method. Their encoding is in docs/fields.md.
CREATE TABLE client_hours (
    hour            INTEGER NOT NULL,  -- Unix seconds of the hour's start
    client          BLOB    NOT NULL,
    requests        INTEGER NOT NULL,
    drops           INTEGER NOT NULL,
    rate_limited    INTEGER NOT NULL,
    kod             INTEGER NOT NULL,
    offset_count    INTEGER NOT NULL,
    offset_min_ns   INTEGER,
    offset_max_ns   INTEGER,
    offset_sum_ns   REAL,
    delay_count     INTEGER NOT NULL,
    delay_min_ns    INTEGER,
    delay_max_ns    INTEGER,
    delay_sum_ns    REAL,
    offset_hist     BLOB    NOT NULL,
    delay_hist      BLOB    NOT NULL,
    tallies         BLOB    NOT NULL,
    versions        INTEGER NOT NULL,  -- bit v set: version v seen
    implementations INTEGER NOT NULL,  -- bit i set: ntp.Implementation i seen
    methods         INTEGER NOT NULL,  -- bit m set: ntp.OffsetMethod m seen
    PRIMARY KEY (hour, client)
) WITHOUT ROWID;
CREATE INDEX client_hours_client ON client_hours (client, hour);

-- One row per hour: client_hours of that hour summed over clients, merged
-- per batch, so that statistics over long windows read one row per hour.
-- abs_offset_lo_ns and abs_offset_hi_ns bound |offset| over the hour
-- (the smallest and largest |offset| range of any of its client hours).
CREATE TABLE hours (
    hour             INTEGER PRIMARY KEY,  -- Unix seconds of the hour's start
    clients          INTEGER NOT NULL,     -- client_hours rows of the hour
    requests         INTEGER NOT NULL,
    drops            INTEGER NOT NULL,
    offset_count     INTEGER NOT NULL,
    offset_min_ns    INTEGER,
    offset_max_ns    INTEGER,
    abs_offset_lo_ns INTEGER,
    abs_offset_hi_ns INTEGER,
    delay_count      INTEGER NOT NULL,
    delay_min_ns     INTEGER,
    delay_max_ns     INTEGER,
    offset_hist      BLOB    NOT NULL,
    delay_hist       BLOB    NOT NULL,
    tallies          BLOB    NOT NULL
);

-- Where retention has cut each table: rows older than cutoff may have
-- been deleted, so sums over a client's rows equal its totals in clients
-- only for clients first seen after the client_hours cutoff.
CREATE TABLE retention (
    name   TEXT    NOT NULL PRIMARY KEY,  -- table
    cutoff INTEGER NOT NULL               -- client_hours: Unix seconds of an hour
) WITHOUT ROWID;
