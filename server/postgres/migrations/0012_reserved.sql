-- 0012: reserved for the rollout branch's migration, which replaces this file when the
-- branches meet (migrations are numbered without gaps, and 0013 follows it).
SELECT 1;
