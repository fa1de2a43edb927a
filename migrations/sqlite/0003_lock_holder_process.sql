-- A workspace lock records the process that holds it (host name, pid, and
-- "<boot id>/<pid namespace>/<uid>/<process start time>"), so that a process on the same
-- host can take over at once a lock whose holder died (SIGKILL, crash) instead of waiting
-- out its lease. NULL for leases taken before this migration: those are only waited out.
ALTER TABLE sync_locks ADD COLUMN holder_host TEXT;
ALTER TABLE sync_locks ADD COLUMN holder_pid INTEGER;
ALTER TABLE sync_locks ADD COLUMN holder_process TEXT;

-- The lock holder a run started under, so that whoever takes over a dead holder's lock
-- ends exactly that holder's runs (`failed`, interrupted) and no one else's. Stamped by the
-- trigger below whenever a run becomes `running`: every writer gets it, none can forget it.
ALTER TABLE sync_log ADD COLUMN lock_holder TEXT;

CREATE TRIGGER sync_log_lock_holder AFTER UPDATE OF status ON sync_log
FOR EACH ROW WHEN NEW.status = 'running' AND OLD.status IS NOT 'running'
BEGIN
    UPDATE sync_log
    SET lock_holder = (SELECT holder FROM sync_locks WHERE workspace_id = NEW.workspace_id)
    WHERE id = NEW.id;
END;
