-- ShardSense core schema. Every table is a ReplacingMergeTree whose sorting key
-- holds the event's unique id, so at-least-once delivery (a replayed Kafka
-- message, a retried insert) collapses to one row. Queries that must count
-- each event once read the v_* views (FINAL) or add FINAL themselves.

-- One row per batch timing; (event_id, seq) is unique: seq = index in its report.
CREATE TABLE IF NOT EXISTS batch_timings
(
    job_id       LowCardinality(String),
    worker_id    Int32,
    event_id     String,
    seq          UInt32,
    epoch        UInt32,
    step         UInt64,
    samples      UInt32,
    data_wait_s  Float64,
    compute_s    Float64,
    map_version  UInt32,
    end_ts       DateTime64(6),
    report_ts    DateTime64(6),
    ingest_ts    DateTime64(6) DEFAULT now64(6),
    host         String DEFAULT ''
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(end_ts)
ORDER BY (job_id, worker_id, end_ts, event_id, seq);

CREATE VIEW IF NOT EXISTS v_batch_timings AS SELECT * FROM batch_timings FINAL;

-- Rolling per-worker features, one row per (worker, processed report).
CREATE TABLE IF NOT EXISTS worker_features
(
    job_id             LowCardinality(String),
    worker_id          Int32,
    event_id           String,
    ts                 DateTime64(6),
    last_step          UInt64,
    batches            UInt32,
    time_per_sample_s  Float64,
    ewma_tps           Float64,
    mean_tps           Float64,
    p50_tps            Float64,
    p90_tps            Float64,
    trend              Float64,
    wait_share         Float64,
    slowdown           Float64
)
ENGINE = ReplacingMergeTree
ORDER BY (job_id, worker_id, ts, event_id);

CREATE VIEW IF NOT EXISTS v_worker_features AS SELECT * FROM worker_features FINAL;

-- Every prediction event the processor emitted.
CREATE TABLE IF NOT EXISTS predictions
(
    job_id             LowCardinality(String),
    worker_id          Int32,
    event_id           String,
    ts                 DateTime64(6),
    based_on_step      UInt64,
    time_per_sample_s  Float64,
    uncertainty_s      Float64,
    slowdown           Float64,
    straggler          UInt8,
    model_versions     Map(String, String)
)
ENGINE = ReplacingMergeTree
ORDER BY (job_id, worker_id, ts, event_id);

CREATE VIEW IF NOT EXISTS v_predictions AS SELECT * FROM predictions FINAL;

-- Every planner decision, published or not, with the gain and cost it weighed.
CREATE TABLE IF NOT EXISTS planner_decisions
(
    job_id            LowCardinality(String),
    decision_id       String,
    ts                DateTime64(6),
    decision          LowCardinality(String),
    reason            String,
    algorithm         LowCardinality(String),
    map_version       UInt32,
    world_size        UInt32,
    moved_shards      UInt32,
    predicted_gain_s  Float64,
    move_cost_s       Float64,
    current_step_s    Float64,
    predicted_step_s  Float64,
    batch_sizes       Array(UInt32)
)
ENGINE = ReplacingMergeTree
ORDER BY (job_id, ts, decision_id);

CREATE VIEW IF NOT EXISTS v_planner_decisions AS SELECT * FROM planner_decisions FINAL;

-- Every shard map published, in full.
CREATE TABLE IF NOT EXISTS shard_maps
(
    job_id             LowCardinality(String),
    map_version        UInt32,
    event_id           String,
    ts                 DateTime64(6),
    apply_epoch        UInt32,
    apply_step         UInt64,
    num_shards         UInt32,
    global_batch_size  UInt32,
    batch_sizes        Array(UInt32),
    shards             Array(Array(UInt32)),
    predicted_gain_s   Float64,
    move_cost_s        Float64,
    reason             String
)
ENGINE = ReplacingMergeTree
ORDER BY (job_id, map_version);

CREATE VIEW IF NOT EXISTS v_shard_maps AS SELECT * FROM shard_maps FINAL;

-- Rejected inputs; one row per source offset however often it is re-read.
CREATE TABLE IF NOT EXISTS dead_letters
(
    job_id            LowCardinality(String),
    event_id          String,
    ts                DateTime64(6),
    code              LowCardinality(String),
    reason            String,
    source_topic      String,
    source_partition  Int32,
    source_offset     Int64,
    payload_bytes     UInt64
)
ENGINE = ReplacingMergeTree
ORDER BY (source_topic, source_partition, source_offset);

CREATE VIEW IF NOT EXISTS v_dead_letters AS SELECT * FROM dead_letters FINAL;
