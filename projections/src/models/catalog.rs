//! The `catalog` projection: every clinic's setup (settings, opening
//! hours, resources, treatments, pricing rules, closures) and every
//! program — what `GET /v1/clinics/{clinic_id}` and
//! `GET /v1/programs/{program_id}` answer.
//!
//! A clinic's lists are kept in the order their events were stored, as
//! the aggregate keeps them. Each row remembers the position of the last
//! event it applied, so an event applied twice changes nothing.

use std::collections::HashMap;

use chrono_tz::Tz;
use clinicbook_domain::clinic::ClinicEvent;
use clinicbook_domain::pricing::PricingRules;
use clinicbook_domain::program::{Program, ProgramEvent};
use clinicbook_domain::schedule::OpeningHours;
use clinicbook_domain::AggregateKind;
use clinicbook_eventstore::FeedEvent;
use clinicbook_wire::admin::{
    ClosureView, OpeningHoursInput, PricingRulesInput, ProgramView, ResourceView, TreatmentView,
};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

use super::sql::{self, apply_fn, decode, row, uuid_id, Table};
use crate::{Projection, ProjectionError};

/// The projection.
pub const PROJECTION: Projection = Projection {
    name: "catalog",
    tables: &[&CLINICS.def, &PROGRAMS.def],
    ddl: "",
    kinds: &[AggregateKind::Clinic, AggregateKind::Program],
    apply: apply_fn!(apply_batch),
};

row! {
    /// A row of `catalog_clinics`: a registered clinic's setup. The
    /// opening hours, pricing rules and lists are stored as the JSON the
    /// clinic view answers them as.
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    pub(crate) struct ClinicRow {
        clinic_id: Uuid,
        name: String,
        timezone: Tz,
        currency: String,
        cancellation_notice_hours: i64,
        late_cancel_fee_percent: i64,
        opening_hours: OpeningHoursInput,
        resources: Vec<ResourceView>,
        treatments: Vec<TreatmentView>,
        pricing_rules: PricingRulesInput,
        closures: Vec<ClosureView>,
        last_position: i64,
    }
}

pub(crate) static CLINICS: Table<ClinicRow> = Table::new("catalog_clinics", &["clinic_id"], &[]);

row! {
    /// A row of `catalog_programs`: a program of the catalog, stored as
    /// the view answers it (a program never changes once created).
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    pub(crate) struct ProgramRow {
        program_id: Uuid,
        view: ProgramView,
        last_position: i64,
    }
}

pub(crate) static PROGRAMS: Table<ProgramRow> =
    Table::new("catalog_programs", &["program_id"], &[]);

/// The clinic view's parts and the program view are stored as the JSON
/// they are answered as.
macro_rules! jsonb {
    ($($ty:ty),+) => {
        $(impl sql::SqlType for $ty {
            const SQL: &'static str = "jsonb";
        })+
    };
}

jsonb!(
    ProgramView,
    OpeningHoursInput,
    PricingRulesInput,
    Vec<ResourceView>,
    Vec<TreatmentView>,
    Vec<ClosureView>
);

/// Folds one clinic event into `rows` as the aggregate does. Events of a
/// clinic never registered (which the aggregate refuses) leave no row.
fn apply_clinic(
    rows: &mut HashMap<Uuid, ClinicRow>,
    event: &FeedEvent,
) -> Result<(), ProjectionError> {
    let id = uuid_id(event)?;
    let change: ClinicEvent = decode(event)?;
    if let ClinicEvent::ClinicRegistered {
        name,
        timezone,
        currency,
        policy,
        ..
    } = &change
    {
        if rows.contains_key(&id) {
            return Ok(());
        }
        rows.insert(
            id,
            ClinicRow {
                clinic_id: id,
                name: name.clone(),
                timezone: sql::timezone(event, timezone)?,
                currency: currency.clone(),
                cancellation_notice_hours: i64::from(policy.notice_hours),
                late_cancel_fee_percent: policy.late_fee_percent,
                opening_hours: OpeningHoursInput::from(&OpeningHours::default()),
                resources: Vec::new(),
                treatments: Vec::new(),
                pricing_rules: PricingRulesInput::from(&PricingRules::default()),
                closures: Vec::new(),
                last_position: event.position,
            },
        );
        return Ok(());
    }
    let Some(row) = rows.get_mut(&id) else {
        return Ok(());
    };
    if row.last_position >= event.position {
        return Ok(());
    }
    row.last_position = event.position;
    match change {
        ClinicEvent::ClinicRegistered { .. } => {}
        ClinicEvent::OpeningHoursSet { hours } => row.opening_hours = (&hours).into(),
        ClinicEvent::ResourceAdded { resource } => row.resources.push((&resource).into()),
        ClinicEvent::TreatmentAdded { treatment } => row.treatments.push((&treatment).into()),
        ClinicEvent::PricingRulesSet { rules } => row.pricing_rules = (&rules).into(),
        ClinicEvent::ClosureAdded { closure } => row.closures.push((&closure).into()),
        // Hold, offer and reminder settings are answered by their own route.
        ClinicEvent::SettingsChanged { .. } => {}
    }
    Ok(())
}

/// The program row of a `ProgramCreated` event, folded as the aggregate
/// folds it.
fn program_row(event: &FeedEvent) -> Result<ProgramRow, ProjectionError> {
    let mut program = Program::default();
    program.evolve(decode::<ProgramEvent>(event)?);
    let view = ProgramView::of(&program)
        .ok_or_else(|| sql::invalid(event, "a created program without its ids"))?;
    Ok(ProgramRow {
        program_id: view.program_id,
        view,
        last_position: event.position,
    })
}

async fn apply_batch(conn: &mut PgConnection, events: &[FeedEvent]) -> Result<(), ProjectionError> {
    let clinics: Vec<&FeedEvent> = events
        .iter()
        .filter(|event| event.kind() == Some(AggregateKind::Clinic))
        .collect();
    if !clinics.is_empty() {
        let mut rows = CLINICS
            .load_streams(conn, &clinics, |row: &ClinicRow| row.clinic_id)
            .await?;
        for event in clinics {
            apply_clinic(&mut rows, event)?;
        }
        CLINICS.upsert_all(conn, rows).await?;
    }
    let programs: Vec<ProgramRow> = events
        .iter()
        .filter(|event| event.kind() == Some(AggregateKind::Program))
        .map(program_row)
        .collect::<Result<_, _>>()?;
    // A program is created once and never changes: a replayed creation
    // keeps the row there.
    PROGRAMS.insert_new(conn, &programs).await?;
    Ok(())
}
