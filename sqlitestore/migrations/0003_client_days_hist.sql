-- Schema 3: the daily rollups carry the histograms of |offset| and delay
-- too (the same encoding as client_hours'), so that an anomaly's count of
-- requests beyond a threshold over a long window reads a row per client
-- and day. A day's histogram is NULL when unknown: rows written before
-- this schema (ALTER TABLE fills them so), and any row merged with one;
-- readers then use the day's hourly rows. The upgrade is instant.
ALTER TABLE client_days ADD COLUMN offset_hist BLOB;
ALTER TABLE client_days ADD COLUMN delay_hist BLOB;
