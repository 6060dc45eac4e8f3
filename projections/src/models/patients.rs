//! The `patients` projection: each patient's profile as stored — the
//! personal fields sealed (ciphertext only; they are opened with the
//! patient's key when read), language, consent — and when it was erased.
//!
//! On `PatientErased` the sealed fields are dropped too, so the read model
//! holds nothing of an erased patient but the fact and its time.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use clinicbook_domain::patient::{Language, PatientEvent, Profile};
use clinicbook_domain::AggregateKind;
use clinicbook_eventstore::FeedEvent;
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

use super::sql::{apply_fn, decode, row, uuid_id, Table};
use crate::{Projection, ProjectionError};

/// The projection.
pub const PROJECTION: Projection = Projection {
    name: "patients",
    tables: &[&PROFILES.def],
    ddl: "",
    kinds: &[AggregateKind::Patient],
    apply: apply_fn!(apply_batch),
};

row! {
    /// A row of `patients_profiles`: one patient. `name`, `email` and
    /// `phone` are sealed (`sealed:v1:…`), and NULL once erased.
    #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
    pub(crate) struct Row {
        patient_id: Uuid,
        name: Option<String>,
        email: Option<String>,
        phone: Option<String>,
        language: Language,
        consent_email: bool,
        consent_sms: bool,
        erased_at: Option<DateTime<Utc>>,
        last_position: i64,
    }
}

pub(crate) static PROFILES: Table<Row> = Table::new("patients_profiles", &["patient_id"], &[]);

impl Row {
    fn new(patient_id: Uuid) -> Self {
        Self {
            patient_id,
            ..Self::default()
        }
    }

    fn set(&mut self, profile: &Profile) {
        self.name = Some(profile.contact.name.0.clone());
        self.email = profile.contact.email.as_ref().map(|s| s.0.clone());
        self.phone = profile.contact.phone.as_ref().map(|s| s.0.clone());
        self.language = profile.language;
        self.consent_email = profile.consent.email;
        self.consent_sms = profile.consent.sms;
    }

    /// Applies `event` as the aggregate does.
    fn apply(&mut self, event: &PatientEvent, position: i64) {
        self.last_position = position;
        match event {
            PatientEvent::PatientRegistered { profile, .. }
            | PatientEvent::PatientUpdated { profile } => self.set(profile),
            PatientEvent::PatientErased { erased_at, .. } => {
                self.name = None;
                self.email = None;
                self.phone = None;
                self.consent_email = false;
                self.consent_sms = false;
                self.erased_at = Some(*erased_at);
            }
        }
    }
}

async fn apply_batch(conn: &mut PgConnection, events: &[FeedEvent]) -> Result<(), ProjectionError> {
    let mine: Vec<&FeedEvent> = events
        .iter()
        .filter(|event| event.kind() == Some(AggregateKind::Patient))
        .collect();
    if mine.is_empty() {
        return Ok(());
    }
    let mut rows: HashMap<Uuid, Row> = PROFILES
        .load_streams(conn, &mine, |row: &Row| row.patient_id)
        .await?;
    for event in mine {
        let id = uuid_id(event)?;
        let change: PatientEvent = decode(event)?;
        rows.entry(id)
            .or_insert_with(|| Row::new(id))
            .apply(&change, event.position);
    }
    PROFILES.upsert_all(conn, rows).await
}
