//! Package use cases: purchase (from the wallet or paid outside), transfer
//! to another clinic, and the package view.

use chrono::{DateTime, TimeDelta, Utc};
use clinicbook_domain::clinic::Clinic;
use clinicbook_domain::package::{self as domain, Package, PackageCommand};
use clinicbook_domain::program::Program;
use clinicbook_domain::wallet::{Wallet, WalletCommand};
use clinicbook_domain::{ClinicId, DomainError, PackageId, PatientId, ProgramId};
use clinicbook_eventstore::{UnitOfWork, UowError, UseCase};
use clinicbook_wire::money::{
    PackageBought, PackageHistoryEntry, PackageView, PurchasePackage, TransferPackage,
};
use uuid::Uuid;

use super::replay;
use crate::{CommandError, Commands, Ctx, Done};

/// Buys a program: the `Package` purchase and, for wallet payment, the
/// `Wallet` debit, in one unit of work; the `Program` is guarded so its
/// price and sessions cannot change under the purchase.
struct Purchase {
    package_id: PackageId,
    patient_id: PatientId,
    program_id: ProgramId,
    payment: domain::PackagePayment,
    now: DateTime<Utc>,
}

impl Purchase {
    /// The first answer again when `package` is this very purchase, already
    /// made (same patient and program): a retry must not charge twice.
    fn already_made(&self, package: &Package) -> Option<PackageBought> {
        let same = package.patient_id == Some(self.patient_id)
            && package.program_id == Some(self.program_id);
        let valid_until = package.valid_until.filter(|_| same)?;
        Some(PackageBought {
            package_id: self.package_id.0,
            sessions_left: package.sessions_left(),
            valid_until,
        })
    }
}

impl UseCase for Purchase {
    type Output = PackageBought;

    async fn run(&self, uow: &mut UnitOfWork) -> Result<PackageBought, UowError> {
        let id = self.package_id.to_string();
        let wallet_id = self.patient_id.to_string();
        let pays_from_wallet = self.payment == domain::PackagePayment::Wallet;
        if pays_from_wallet {
            // Read the wallet before the package. The debit `package:<id>` is
            // only ever committed together with the package, so a concurrent
            // attempt of this purchase that commits between the two reads
            // shows up in the package (answered below) and never in the
            // wallet alone (which would refuse the debit as a duplicate
            // reference instead of answering the retry).
            uow.load::<Wallet>(&wallet_id).await?;
        }
        if let Some(answer) = self.already_made(uow.load::<Package>(&id).await?) {
            return Ok(answer);
        }
        let program = uow
            .guard::<Program>(&self.program_id.to_string())
            .await?
            .clone();
        let Some(treatment_id) = program.treatment_id.filter(|_| program.exists()) else {
            return Err(DomainError::not_found(format!("program {}", self.program_id)).into());
        };
        // Validity is at most ten years (Program's bound), so this only
        // fails for a clock near the end of time.
        let valid_until = self
            .now
            .checked_add_signed(TimeDelta::days(program.validity_days.into()))
            .ok_or_else(|| DomainError::inconsistent("validity_days", "expiry out of range"))?;
        uow.handle::<Package>(
            &id,
            PackageCommand::Purchase {
                package_id: self.package_id,
                patient_id: self.patient_id,
                program_id: self.program_id,
                treatment_id,
                sessions: program.sessions,
                price: program.price,
                valid_until,
                clinic_ids: program.clinic_ids,
                payment: self.payment.clone(),
                now: self.now,
            },
        )
        .await?;
        if pays_from_wallet {
            uow.handle::<Wallet>(
                &wallet_id,
                WalletCommand::Debit {
                    amount: program.price,
                    reference: format!("package:{}", self.package_id),
                },
            )
            .await?;
        }
        Ok(PackageBought {
            package_id: self.package_id.0,
            sessions_left: program.sessions,
            valid_until,
        })
    }
}

/// Moves a package to a clinic that offers its treatment; the `Clinic` is
/// guarded so the check holds at commit.
struct Transfer {
    package_id: PackageId,
    to_clinic_id: ClinicId,
}

impl UseCase for Transfer {
    /// The answer is read back after the commit (see
    /// [`Commands::transfer_package`]).
    type Output = ();

    async fn run(&self, uow: &mut UnitOfWork) -> Result<(), UowError> {
        let id = self.package_id.to_string();
        let Some(treatment_id) = uow.load::<Package>(&id).await?.treatment_id else {
            return Err(DomainError::not_found(format!("package {id}")).into());
        };
        let clinic = uow.guard::<Clinic>(&self.to_clinic_id.to_string()).await?;
        if !clinic.is_registered() {
            return Err(DomainError::not_found(format!("clinic {}", self.to_clinic_id)).into());
        }
        if clinic.treatment(treatment_id).is_none() {
            return Err(DomainError::not_found(format!(
                "treatment {treatment_id} at clinic {}",
                self.to_clinic_id
            ))
            .into());
        }
        uow.handle::<Package>(
            &id,
            PackageCommand::Transfer {
                to_clinic_id: self.to_clinic_id,
            },
        )
        .await?;
        Ok(())
    }
}

impl Commands {
    /// Sells a program to a patient as a package of sessions, valid from
    /// now for the program's validity days at the program's clinics. Wallet
    /// payment debits the price in the same transaction, under the
    /// reference `package:<package_id>`.
    ///
    /// Retrying with the same `package_id`, patient and program answers the
    /// package bought first and writes (and charges) nothing.
    ///
    /// # Errors
    /// `not_found` for an unknown program; `insufficient_funds` when the
    /// wallet holds less than the price (nothing is written);
    /// `already_exists` when `package_id` names another purchase;
    /// `invalid_input` for an empty external reference; otherwise see
    /// [`CommandError`].
    #[tracing::instrument(skip_all, fields(program_id = %purchase.program_id))]
    pub async fn purchase_package(
        &self,
        ctx: &Ctx,
        purchase: PurchasePackage,
    ) -> Result<Done<PackageBought>, CommandError> {
        let use_case = Purchase {
            package_id: purchase.package_id.map_or_else(PackageId::new, PackageId),
            patient_id: PatientId(purchase.patient_id),
            program_id: ProgramId(purchase.program_id),
            payment: purchase.payment.to_domain()?,
            now: self.now(),
        };
        self.run(ctx, &use_case).await
    }

    /// Makes a package valid at `to_clinic_id` only, which must offer the
    /// package's treatment. A package already limited to that clinic is
    /// left as it is.
    ///
    /// The answer is the package as it stood right after the transfer
    /// (events up to the transfer's position), so a replayed idempotency
    /// key answers the same view even if sessions were used since.
    ///
    /// # Errors
    /// `not_found` for an unknown package, an unknown clinic, or a clinic
    /// that does not offer the package's treatment; otherwise see
    /// [`CommandError`].
    #[tracing::instrument(skip_all, fields(package_id = %package_id))]
    pub async fn transfer_package(
        &self,
        ctx: &Ctx,
        package_id: Uuid,
        transfer: TransferPackage,
    ) -> Result<Done<PackageView>, CommandError> {
        let use_case = Transfer {
            package_id: PackageId(package_id),
            to_clinic_id: ClinicId(transfer.to_clinic_id),
        };
        let done = self.run(ctx, &use_case).await?;
        let view = self.package_as_of(package_id, done.position).await?;
        Ok(done.map(|()| view))
    }

    /// A package: its sessions, expiry, clinics, price and history.
    ///
    /// # Errors
    /// `not_found` when no package has this id; storage failures as
    /// [`CommandError::Store`].
    pub async fn package(&self, package_id: Uuid) -> Result<PackageView, CommandError> {
        self.package_as_of(package_id, None).await
    }

    /// The package folded from its events up to global position `up_to`
    /// (all of them when `None`).
    async fn package_as_of(
        &self,
        package_id: Uuid,
        up_to: Option<i64>,
    ) -> Result<PackageView, CommandError> {
        let id = PackageId(package_id).to_string();
        let replayed = replay::<Package>(self.store(), &id, up_to).await?;
        let package = replayed.state;
        let (Some(patient_id), Some(program_id), Some(treatment_id), Some(valid_until)) = (
            package.patient_id,
            package.program_id,
            package.treatment_id,
            package.valid_until,
        ) else {
            return Err(DomainError::not_found(format!("package {id}")).into());
        };
        let history = replayed
            .events
            .into_iter()
            .map(|(record, event)| PackageHistoryEntry {
                sequence: record.sequence,
                recorded_at: record.recorded_at,
                change: event.into(),
            })
            .collect();
        Ok(PackageView {
            package_id,
            patient_id: patient_id.0,
            program_id: program_id.0,
            treatment_id: treatment_id.0,
            sessions_total: package.sessions_total,
            sessions_used: package.sessions_used,
            sessions_left: package.sessions_left(),
            valid_until,
            clinic_ids: package.clinic_ids.iter().map(|id| id.0).collect(),
            price_cents: package.price.cents(),
            history,
        })
    }
}
