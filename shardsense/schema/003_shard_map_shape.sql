-- Shard maps keep the job's shape (dataset length, per-rank cap), so the planner can
-- rebuild its base map from ClickHouse when the compacted topic was lost (a restarted
-- embedded broker forgets its topics). A view's column list is fixed when it is
-- created, so v_shard_maps is created again to show the new columns.
ALTER TABLE shard_maps ADD COLUMN IF NOT EXISTS num_samples UInt64 DEFAULT 0;
ALTER TABLE shard_maps ADD COLUMN IF NOT EXISTS max_batch_size UInt32 DEFAULT 0;
DROP VIEW IF EXISTS v_shard_maps;
CREATE VIEW IF NOT EXISTS v_shard_maps AS SELECT * FROM shard_maps FINAL;
