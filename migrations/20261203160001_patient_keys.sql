-- Patients' data keys, each wrapped (sealed) by the master key. The one
-- table whose rows are deleted: erasure deletes a patient's key in the
-- same transaction as its PatientErased event, and every field sealed
-- with it becomes unreadable (the events keep their ciphertext).
CREATE TABLE patient_keys (
    patient_id uuid PRIMARY KEY,
    wrapped bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
