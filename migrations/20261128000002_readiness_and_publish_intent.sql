-- The latest preflight result, shown to the UI before the publish time:
-- {"ok": bool, "checked_at": "...", "checks": [{"name", "ok", "detail"}]}. NULL until checked.
ALTER TABLE publish_jobs ADD COLUMN readiness jsonb;

-- Set just before a publish call that cannot be undone and whose result the platform cannot be
-- asked about afterwards (TikTok's init). If it is set but no platform_reference was recorded,
-- the attempt's outcome is unknown: the job must not publish again blindly.
ALTER TABLE publish_attempts ADD COLUMN publish_requested_at timestamptz;
