//! Staff's detail views — a reservation with its history, a wallet, a
//! package — and the waitlist the matcher reads. The answers are the wire
//! crate's types, the same the use cases answer after a write.

use chrono::{DateTime, Utc};
use clinicbook_domain::reservation::{PaymentKind, PaymentMethod, ReservationStatus};
use clinicbook_domain::PackageId;
use clinicbook_wire::booking::{
    PaymentInput, PriceAnswer, ReservationView, Settlement, StatusEntry,
};
use clinicbook_wire::money::{PackageHistoryEntry, PackageView, WalletTransactionView, WalletView};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::models::sql::json_rows;
use crate::models::{packages, reservations, wallets};
use crate::{ProjectionError, ReadModels};

/// The payment stored as a method and a package.
fn payment_from_columns(
    method: Option<PaymentKind>,
    package_id: Option<Uuid>,
) -> Option<PaymentInput> {
    match (method?, package_id) {
        (PaymentKind::Package, Some(package_id)) => Some(PaymentMethod::Package {
            package_id: PackageId(package_id),
        }),
        (PaymentKind::Package, None) => None,
        (PaymentKind::Wallet, _) => Some(PaymentMethod::Wallet),
        (PaymentKind::AtClinic, _) => Some(PaymentMethod::AtClinic),
    }
    .map(Into::into)
}

/// Which transactions of a wallet to answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalletPage {
    /// Transactions with a sequence above this (0: from the first).
    pub after: i64,
    /// At most this many (at least 1).
    pub limit: i64,
}

impl WalletPage {
    /// Transactions a page has when the client names no limit.
    pub const DEFAULT_LIMIT: i64 = 100;
    /// The most transactions one page has.
    pub const MAX_LIMIT: i64 = 1000;
}

impl Default for WalletPage {
    /// The first page of the default size.
    fn default() -> Self {
        Self {
            after: 0,
            limit: Self::DEFAULT_LIMIT,
        }
    }
}

/// A waitlisted reservation that would take a freed slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WaitlistCandidate {
    /// The waitlist entry (a reservation in status `waitlisted`); book it
    /// with this id to fulfil it.
    pub reservation_id: Uuid,
    /// The patient.
    pub patient_id: Uuid,
    /// The clinic.
    pub clinic_id: Uuid,
    /// The treatment.
    pub treatment_id: Uuid,
    /// Earliest wanted start.
    pub earliest: DateTime<Utc>,
    /// Latest wanted start.
    pub latest: DateTime<Utc>,
    /// How it is to be paid once booked.
    pub payment: PaymentInput,
    /// Global position of the event that put it on the waitlist: the
    /// order of the waitlist.
    pub joined_position: i64,
}

fn not_found(what: String) -> ProjectionError {
    ProjectionError::NotFound(what)
}

impl ReadModels {
    /// A reservation with its status history (`GET /v1/reservations/{id}`).
    ///
    /// # Errors
    /// [`ProjectionError::NotFound`] when the projection has no such
    /// reservation; the database failed.
    pub async fn reservation(
        &self,
        reservation_id: Uuid,
    ) -> Result<ReservationView, ProjectionError> {
        let mut conn = self.read_connection().await?;
        let row = reservations::RESERVATIONS
            .load(&mut conn, "reservation_id", &[reservation_id])
            .await?
            .into_iter()
            .next();
        let missing = || not_found(format!("reservation {reservation_id}"));
        let row = row.ok_or_else(missing)?;
        let (Some(patient_id), Some(clinic_id), Some(treatment_id), Some(payment)) = (
            row.patient_id,
            row.clinic_id,
            row.treatment_id,
            payment_from_columns(row.payment_method, row.package_id),
        ) else {
            return Err(missing());
        };
        let history = reservations::HISTORY
            .load(&mut conn, "reservation_id", &[reservation_id])
            .await?;
        let mut history: Vec<_> = history
            .into_iter()
            .map(|entry| {
                (
                    entry.sequence,
                    StatusEntry {
                        status: entry.status.as_str().to_owned(),
                        at: entry.at,
                        event_type: entry.event_type,
                        sequence: entry.sequence,
                    },
                )
            })
            .collect();
        history.sort_by_key(|(sequence, _)| *sequence);
        let start = row.starts_at;
        let settlement = match (
            row.late,
            row.refund_cents,
            row.fee_cents,
            row.session_restored,
        ) {
            (Some(late), Some(refund_cents), Some(fee_cents), Some(session_restored)) => {
                Some(Settlement {
                    late,
                    refund_cents,
                    fee_cents,
                    session_restored,
                })
            }
            _ => None,
        };
        Ok(ReservationView {
            reservation_id,
            status: row.status.as_str().to_owned(),
            patient_id,
            clinic_id,
            resource_id: row.resource_id,
            treatment_id,
            start,
            end: row.ends_at,
            earliest: row.earliest,
            latest: row.latest,
            price: start.map(|_| PriceAnswer {
                base_cents: row.base_cents.unwrap_or(0),
                adjustments_cents: row.adjustments_cents.unwrap_or(0),
                discount_cents: row.discount_cents.unwrap_or(0),
                total_cents: row.total_cents.unwrap_or(0),
            }),
            payment,
            promo_code: row.promo_code,
            settlement,
            history: history.into_iter().map(|(_, entry)| entry).collect(),
            offer: if row.status == ReservationStatus::Waitlisted {
                Self::offer_in(&mut conn, reservation_id).await?
            } else {
                None
            },
        })
    }

    /// A patient's wallet (`GET /v1/wallets/{patient_id}`): its balance
    /// and one page of transactions. Every patient has one: a wallet never
    /// used answers a zero balance and no transactions, as the aggregate
    /// does. The balance and the page are read in one snapshot.
    ///
    /// # Errors
    /// The database failed.
    pub async fn wallet(
        &self,
        patient_id: Uuid,
        page: WalletPage,
    ) -> Result<WalletView, ProjectionError> {
        let mut conn = self.read_connection().await?;
        let wallet = wallets::WALLETS
            .load(&mut conn, "patient_id", &[patient_id])
            .await?
            .into_iter()
            .next();
        let limit = page.limit.max(1);
        // One more than asked: whether there is a next page.
        let query = sqlx::query_scalar(
            "SELECT row_to_json(t) FROM wallets_transactions t
              WHERE patient_id = $1 AND sequence > $2
              ORDER BY sequence LIMIT $3",
        )
        .bind(patient_id)
        .bind(page.after)
        .bind(limit.saturating_add(1));
        let mut rows: Vec<wallets::TransactionRow> =
            json_rows(query, &mut conn, wallets::TRANSACTIONS.def.name).await?;
        let more = i64::try_from(rows.len()).unwrap_or(i64::MAX) > limit;
        rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        let transactions: Vec<WalletTransactionView> = rows
            .into_iter()
            .map(|row| WalletTransactionView {
                kind: row.kind.into(),
                amount_cents: row.amount_cents,
                reference: row.reference,
                sequence: row.sequence,
                recorded_at: row.recorded_at,
            })
            .collect();
        Ok(WalletView {
            patient_id,
            balance_cents: wallet.as_ref().map_or(0, |w| w.balance_cents),
            transactions_total: wallet.as_ref().map_or(0, |w| w.transactions),
            next_after: if more {
                transactions.last().map(|t| t.sequence)
            } else {
                None
            },
            transactions,
        })
    }

    /// A package with its history (`GET /v1/packages/{package_id}`).
    ///
    /// # Errors
    /// [`ProjectionError::NotFound`] when no package has this id; the
    /// database failed.
    pub async fn package(&self, package_id: Uuid) -> Result<PackageView, ProjectionError> {
        let mut conn = self.read_connection().await?;
        let row = packages::PACKAGES
            .load(&mut conn, "package_id", &[package_id])
            .await?
            .into_iter()
            .next();
        let missing = || not_found(format!("package {package_id}"));
        let row = row.ok_or_else(missing)?;
        let (Some(patient_id), Some(program_id), Some(treatment_id), Some(valid_until)) = (
            row.patient_id,
            row.program_id,
            row.treatment_id,
            row.valid_until,
        ) else {
            return Err(missing());
        };
        let mut history = packages::HISTORY
            .load(&mut conn, "package_id", &[package_id])
            .await?;
        history.sort_by_key(|entry| entry.sequence);
        let total = u32::try_from(row.sessions_total).unwrap_or(0);
        let used = u32::try_from(row.sessions_used).unwrap_or(0);
        Ok(PackageView {
            package_id,
            patient_id,
            program_id,
            treatment_id,
            sessions_total: total,
            sessions_used: used,
            sessions_left: total.saturating_sub(used),
            valid_until,
            clinic_ids: row.clinic_ids,
            price_cents: row.price_cents,
            history: history
                .into_iter()
                .map(|entry| PackageHistoryEntry {
                    sequence: entry.sequence,
                    recorded_at: entry.recorded_at,
                    change: entry.change,
                })
                .collect(),
        })
    }

    /// The waitlisted reservations of `clinic_id` for `treatment_id` whose
    /// wanted window admits a start at `start` (`earliest <= start <=
    /// latest`), oldest first: the order in which the waitlist matcher
    /// offers a freed slot.
    ///
    /// # Errors
    /// The database failed.
    pub async fn waitlist_candidates(
        &self,
        clinic_id: Uuid,
        treatment_id: Uuid,
        start: DateTime<Utc>,
    ) -> Result<Vec<WaitlistCandidate>, ProjectionError> {
        let mut conn = self.read_connection().await?;
        let query = sqlx::query_scalar(
            "SELECT row_to_json(r) FROM reservations_reservations r
              WHERE status = $4 AND clinic_id = $1 AND treatment_id = $2
                AND earliest <= $3 AND latest >= $3
              ORDER BY waitlisted_position, reservation_id",
        )
        .bind(clinic_id)
        .bind(treatment_id)
        .bind(start)
        .bind(ReservationStatus::Waitlisted.as_str());
        let rows: Vec<reservations::Row> =
            json_rows(query, &mut conn, reservations::RESERVATIONS.def.name).await?;
        Ok(rows
            .into_iter()
            .filter_map(|row| {
                Some(WaitlistCandidate {
                    reservation_id: row.reservation_id,
                    patient_id: row.patient_id?,
                    clinic_id: row.clinic_id?,
                    treatment_id: row.treatment_id?,
                    earliest: row.earliest?,
                    latest: row.latest?,
                    payment: payment_from_columns(row.payment_method, row.package_id)?,
                    joined_position: row.waitlisted_position?,
                })
            })
            .collect())
    }
}
