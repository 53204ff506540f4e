-- Phase B processor: worker_features rows are ticks (blocks of processor_tick_steps
-- steps of one rank; event_id derives from (job, rank, epoch, block), so a replayed
-- tick collapses to one row), and predictions carry the forecast contract's fields.
-- Views select * as of their creation, so they are recreated after the new columns.

ALTER TABLE worker_features ADD COLUMN IF NOT EXISTS epoch UInt32 DEFAULT 0;

CREATE OR REPLACE VIEW v_worker_features AS SELECT * FROM worker_features FINAL;

ALTER TABLE predictions ADD COLUMN IF NOT EXISTS based_on_epoch UInt32 DEFAULT 0;

ALTER TABLE predictions ADD COLUMN IF NOT EXISTS onset_step UInt64 DEFAULT 0;

ALTER TABLE predictions ADD COLUMN IF NOT EXISTS forecast_offsets Array(UInt32) DEFAULT [];

ALTER TABLE predictions ADD COLUMN IF NOT EXISTS forecast_time_per_sample_s Array(Float64) DEFAULT [];

ALTER TABLE predictions ADD COLUMN IF NOT EXISTS forecast_confidence Float64 DEFAULT 0;

CREATE OR REPLACE VIEW v_predictions AS SELECT * FROM predictions FINAL;
