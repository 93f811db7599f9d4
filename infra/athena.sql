-- Athena tables for the two datasets, for lakes not deployed with infra/template.yaml (which
-- creates the same tables in Glue). Replace BUCKET; partitions are projected, no crawler or
-- MSCK REPAIR needed.

CREATE EXTERNAL TABLE IF NOT EXISTS vision_one_audit (
  entry_id string COMMENT '_id: content hash, unique per entry',
  loggeddatetime string,
  loggeduser string,
  loggedrole string,
  loggeduserid string,
  loggedusermailaddress string,
  accesstype string,
  category string,
  activity string,
  result string,
  details string COMMENT 'JSON object as text',
  ingesteddatetime string,
  time_error string
)
PARTITIONED BY (dt string, hour string)
ROW FORMAT SERDE 'org.openx.data.jsonserde.JsonSerDe'
WITH SERDEPROPERTIES ('mapping.entry_id' = '_id', 'mapping.time_error' = '_time_error')
LOCATION 's3://BUCKET/vision-one/audit/'
TBLPROPERTIES (
  'projection.enabled' = 'true',
  'projection.dt.type' = 'date',
  'projection.dt.format' = 'yyyy-MM-dd',
  'projection.dt.range' = 'NOW-180DAYS,NOW',
  'projection.dt.interval' = '1',
  'projection.dt.interval.unit' = 'DAYS',
  'projection.hour.type' = 'integer',
  'projection.hour.range' = '0,23',
  'projection.hour.digits' = '2',
  'storage.location.template' = 's3://BUCKET/vision-one/audit/dt=${dt}/hour=${hour}/'
);

CREATE EXTERNAL TABLE IF NOT EXISTS active_directory_events (
  time string COMMENT 'UTC, RFC 3339, at the source''s precision',
  time_original string COMMENT 'the time as the agent wrote it, when it was corrected or interpreted',
  time_fix string COMMENT 'why the time was corrected or interpreted',
  event_id int,
  computer string,
  channel string,
  record_id bigint,
  provider string,
  shape string,
  agent_id string,
  batch_id string,
  received_at string,
  hec string COMMENT 'HEC metadata (time, host, source, sourcetype, index, fields) as JSON text, for events sent over HEC',
  event string COMMENT 'the original event as JSON text'
)
PARTITIONED BY (category string, dt string)
ROW FORMAT SERDE 'org.openx.data.jsonserde.JsonSerDe'
LOCATION 's3://BUCKET/active-directory/'
TBLPROPERTIES (
  'projection.enabled' = 'true',
  'projection.category.type' = 'enum',
  'projection.category.values' = 'logon,account_management,object_access,system,other',
  'projection.dt.type' = 'date',
  'projection.dt.format' = 'yyyy-MM-dd',
  'projection.dt.range' = '2000-01-01,NOW+1YEARS',
  'projection.dt.interval' = '1',
  'projection.dt.interval.unit' = 'DAYS',
  'storage.location.template' = 's3://BUCKET/active-directory/category=${category}/dt=${dt}/'
);

-- The events ad-ingest could not put in the lake (one object per batch, the reason per event).
CREATE EXTERNAL TABLE IF NOT EXISTS active_directory_quarantine (
  `index` int COMMENT 'the event''s index in its batch',
  reason string COMMENT 'why the lake could not take it',
  agent_id string,
  batch_id string,
  received_at string,
  hec string COMMENT 'HEC metadata as JSON text, for events sent over HEC',
  event string COMMENT 'the original event as JSON text'
)
ROW FORMAT SERDE 'org.openx.data.jsonserde.JsonSerDe'
LOCATION 's3://BUCKET/active-directory/quarantine/';

-- Example: failed console logons in the last day.
-- SELECT loggeddatetime, loggeduser, accesstype FROM vision_one_audit
--  WHERE dt >= cast(current_date - interval '1' day as varchar) AND activity = 'Log on' AND result = 'Unsuccessful';
