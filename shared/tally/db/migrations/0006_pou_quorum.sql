-- The finalizer's work list: pending receipts whose quorum is in. Without it every batch walked
-- every pending receipt oldest first and counted its attesters, so receipts that never reach
-- quorum (a slow committee, a short one) were re-read every minute and slowed every batch
-- behind them (100k of them: about half a second a batch). Attestation inserts add a receipt
-- here in the same statement once it is quorate; finalizing removes it.

-- Distinct qualifying attesters of a receipt: its client's ACCEPTED and its committee's
-- AUDIT_PASS, by agents still active. The one definition of quorum.
CREATE FUNCTION pou_qualifying_attesters(p_task uuid, p_client text, p_committee text[])
RETURNS bigint LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT count(DISTINCT a.by_did)
    FROM task_attestations a
    JOIN agents ag ON ag.did = a.by_did AND ag.status = 'active'
    WHERE a.task_id = p_task
      AND ((a.type = 'ACCEPTED' AND a.by_did = p_client)
           OR (a.type = 'AUDIT_PASS' AND a.by_did = ANY (p_committee)))
$$;

CREATE TABLE task_receipts_quorate (
    task_id     uuid PRIMARY KEY REFERENCES task_receipts (id),
    quorate_at  timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION task_receipts_mark_quorate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO task_receipts_quorate (task_id)
    SELECT r.id FROM task_receipts r
    WHERE r.id IN (SELECT DISTINCT task_id FROM new_attestations)
      AND r.status = 'pending'
      AND pou_qualifying_attesters(r.id, r.client_did, r.committee) >= r.k
    ORDER BY r.id
    ON CONFLICT (task_id) DO NOTHING;
    RETURN NULL;
END $$;

CREATE TRIGGER trg_task_attestations_quorate
    AFTER INSERT ON task_attestations
    REFERENCING NEW TABLE AS new_attestations
    FOR EACH STATEMENT EXECUTE FUNCTION task_receipts_mark_quorate();

-- Receipts already quorate when this migration runs.
INSERT INTO task_receipts_quorate (task_id)
SELECT r.id FROM task_receipts r
WHERE r.status = 'pending' AND pou_qualifying_attesters(r.id, r.client_did, r.committee) >= r.k;
