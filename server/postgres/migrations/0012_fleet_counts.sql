-- 0012: what the kernels report and the kernel filter read at a fleet of a million
-- machines: the machines per kernel and architecture kept as a sum of deltas, and an
-- index of machines by kernel in id order.
--
-- Why deltas, not a count at every report: grouping a million machines reads the whole
-- table (some 200 MB) for twenty-odd rows, a fifth of a second per report; an index-only
-- scan of a kernel index helps only while the visibility map is set, and check-ins clear
-- it page by page all day. A table of counters would be a row every enable and every
-- stale removal of a kernel waits on. So every change of the fleet appends a row of
-- deltas (one per kernel and architecture a statement inserted or deleted, two per
-- machine whose kernel changed), the report sums them and folds them into one row per
-- kernel and architecture as it reads them (server/postgres/machine.go, Kernels). A
-- check-in that keeps its kernel, nearly all of them, fires nothing: the row trigger has
-- a WHEN clause, and its update stays HOT (neither kernel nor architecture changes).
--
-- Additive only: the previous server neither reads nor writes the table, and the
-- triggers count its changes too. Creating the triggers locks machines against writes
-- until the migration commits, so the counts start exact; the backfill is one scan.
CREATE TABLE machine_kernel_counts (
	id           bigint GENERATED ALWAYS AS IDENTITY CONSTRAINT machine_kernel_counts_pkey PRIMARY KEY,
	kernel       text NOT NULL,
	architecture text NOT NULL,
	machines     bigint NOT NULL
);

CREATE FUNCTION count_inserted_machine_kernels() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO machine_kernel_counts (kernel, architecture, machines)
	SELECT kernel, architecture, count(*) FROM inserted_machines GROUP BY kernel, architecture;
	RETURN NULL;
END
$$;

CREATE FUNCTION count_deleted_machine_kernels() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO machine_kernel_counts (kernel, architecture, machines)
	SELECT kernel, architecture, -count(*) FROM deleted_machines GROUP BY kernel, architecture;
	RETURN NULL;
END
$$;

CREATE FUNCTION count_machine_kernel_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO machine_kernel_counts (kernel, architecture, machines)
	VALUES (OLD.kernel, OLD.architecture, -1), (NEW.kernel, NEW.architecture, 1);
	RETURN NULL;
END
$$;

CREATE TRIGGER machines_kernel_counts_insert AFTER INSERT ON machines
	REFERENCING NEW TABLE AS inserted_machines
	FOR EACH STATEMENT EXECUTE FUNCTION count_inserted_machine_kernels();
CREATE TRIGGER machines_kernel_counts_delete AFTER DELETE ON machines
	REFERENCING OLD TABLE AS deleted_machines
	FOR EACH STATEMENT EXECUTE FUNCTION count_deleted_machine_kernels();
CREATE TRIGGER machines_kernel_counts_update AFTER UPDATE OF kernel, architecture ON machines
	FOR EACH ROW WHEN (OLD.kernel IS DISTINCT FROM NEW.kernel OR OLD.architecture IS DISTINCT FROM NEW.architecture)
	EXECUTE FUNCTION count_machine_kernel_change();

INSERT INTO machine_kernel_counts (kernel, architecture, machines)
SELECT kernel, architecture, count(*) FROM machines GROUP BY kernel, architecture;

-- The machines of one kernel in id order: a kernel filter's page (report machines
-- --kernel, a bulk move by kernel) reads its own machines, not the whole id order. A
-- check-in writes no entry unless the kernel changes.
CREATE INDEX machines_kernel_id_idx ON machines (kernel, id);
