-- The index the entity linker needs on SQLite: its planner has no statistics for the
-- linker's intermediate results and would otherwise compare every participant with every
-- contact (minutes on a quickstart-sized workspace instead of a tenth of a second). The
-- expression must stay exactly the one the linker's join uses: lower(trim(email)).
CREATE INDEX contacts_workspace_email_idx ON contacts (workspace_id, lower(trim(email)));
