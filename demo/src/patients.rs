//! Patients: who they are (ids from the seed, and a profile for most),
//! which branch they usually visit, what they pay into their wallet and which package they buy; and
//! the staff calls that fund the wallets and sell the packages.

use clinicbook_wire::money::{Deposit, PackageBought, PackagePayment, PurchasePackage};
use clinicbook_wire::patients::{ConsentInput, PatientInput};
use reqwest::StatusCode;
use uuid::Uuid;

use super::catalog::Chain;
use super::client::{each, Api, As};
use super::ids::{demo_id, key};
use super::DemoError;

/// Wallet deposits patients make, in euro cents.
const DEPOSITS: [i64; 9] = [
    10_000, 15_000, 20_000, 25_000, 30_000, 40_000, 50_000, 75_000, 100_000,
];
/// Percent of patients who pay into their wallet.
const FUNDED_PERCENT: u32 = 85;
/// Percent of patients who buy a package.
const PACKAGE_PERCENT: usize = 30;

/// A package a patient buys.
#[derive(Clone, Debug)]
pub(super) struct PackagePlan {
    /// Its id.
    pub id: Uuid,
    /// Index into [`Chain::programs`].
    pub program: usize,
    /// Paid from the wallet (else by card, outside clinicbook).
    pub from_wallet: bool,
}

/// A demo patient.
#[derive(Clone, Debug)]
pub(super) struct Patient {
    /// Their id (also their wallet's).
    pub id: Uuid,
    /// The branch they usually visit.
    pub home: usize,
    /// What they pay into their wallet (0: nothing).
    pub deposit_cents: i64,
    /// The package they buy.
    pub package: Option<PackagePlan>,
}

impl Patient {
    /// What is left in the wallet for bookings once the package is paid.
    pub(super) fn wallet_budget(&self, chain: &Chain) -> i64 {
        let package = self
            .package
            .as_ref()
            .filter(|p| p.from_wallet)
            .map_or(0, |p| chain.programs[p.program].price_cents);
        self.deposit_cents - package
    }
}

/// What funding the patients did.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Funding {
    /// Wallets with a deposit.
    pub wallets: usize,
    /// Cents deposited in all.
    pub deposited_cents: i64,
    /// Packages paid from the wallet.
    pub packages_from_wallet: usize,
    /// Packages paid outside clinicbook.
    pub packages_external: usize,
}

/// The `count` patients of the run with `seed`.
pub(super) fn plan(
    rng: &mut fastrand::Rng,
    chain: &Chain,
    seed: u64,
    count: usize,
) -> Vec<Patient> {
    let mut patients: Vec<Patient> = (0..count)
        .map(|i| Patient {
            id: demo_id(seed, &format!("patient/{i}")),
            home: rng.usize(..chain.branches.len()),
            deposit_cents: if rng.u32(..100) < FUNDED_PERCENT {
                DEPOSITS[rng.usize(..DEPOSITS.len())]
            } else {
                0
            },
            package: None,
        })
        .collect();
    let mut buyers: Vec<usize> = (0..count).collect();
    rng.shuffle(&mut buyers);
    buyers.truncate(count * PACKAGE_PERCENT / 100);
    buyers.sort_unstable();
    for i in buyers {
        let program = usize::from(rng.u32(..100) >= 60);
        let patient = &mut patients[i];
        let from_wallet = patient.deposit_cents > 0 && rng.bool();
        if from_wallet {
            patient.deposit_cents += chain.programs[program].price_cents;
        }
        patient.package = Some(PackagePlan {
            id: demo_id(seed, &format!("package/{i}")),
            program,
            from_wallet,
        });
    }
    patients
}

/// Makes every patient's deposit, then their package purchase.
///
/// # Errors
/// Any refusal of the staff routes, or a transport failure.
pub(super) async fn fund(
    api: &Api,
    chain: &Chain,
    patients: &[Patient],
    seed: u64,
    concurrency: usize,
) -> Result<Funding, DemoError> {
    let indexed: Vec<(usize, &Patient)> = patients.iter().enumerate().collect();
    each(indexed, concurrency, |(i, patient)| {
        fund_one(api, chain, i, patient, seed)
    })
    .await?;
    let mut funding = Funding::default();
    for patient in patients {
        if patient.deposit_cents > 0 {
            funding.wallets += 1;
            funding.deposited_cents += patient.deposit_cents;
        }
        match &patient.package {
            Some(p) if p.from_wallet => funding.packages_from_wallet += 1,
            Some(_) => funding.packages_external += 1,
            None => {}
        }
    }
    Ok(funding)
}

async fn fund_one(
    api: &Api,
    chain: &Chain,
    index: usize,
    patient: &Patient,
    seed: u64,
) -> Result<(), DemoError> {
    // A profile (sealed at rest) for nine patients in ten; the rest are
    // walk-ins known only by id. Every third speaks German.
    if index % 10 != 9 {
        let body = PatientInput {
            patient_id: Some(patient.id),
            name: format!("Demo Patient {index:04}"),
            email: Some(format!("patient{index:04}@demo.clinicbook.example")),
            phone: Some(format!("+49151{index:07}")),
            language: Some(if index % 3 == 0 { "de" } else { "en" }.to_owned()),
            consent: ConsentInput {
                email: index % 7 != 0,
                sms: index % 2 == 0,
            },
        };
        api.post(
            As::Staff,
            "/v1/patients",
            &body,
            &key(seed, &format!("patient/{index}")),
        )
        .await?
        .expect(StatusCode::CREATED)?;
    }
    if patient.deposit_cents > 0 {
        let body = Deposit {
            amount_cents: patient.deposit_cents,
            reference: format!("demo-{seed}-card-{index:04}"),
        };
        api.post(
            As::Staff,
            &format!("/v1/wallets/{}/deposits", patient.id),
            &body,
            &key(seed, &format!("deposit/{index}")),
        )
        .await?
        .expect(StatusCode::CREATED)?;
    }
    if let Some(package) = &patient.package {
        let payment = if package.from_wallet {
            PackagePayment::Wallet {}
        } else {
            PackagePayment::External {
                reference: format!("demo-{seed}-terminal-{index:04}"),
            }
        };
        let body = PurchasePackage {
            package_id: Some(package.id),
            patient_id: patient.id,
            program_id: chain.programs[package.program].id,
            payment,
        };
        api.post(
            As::Staff,
            "/v1/packages",
            &body,
            &key(seed, &format!("package/{index}")),
        )
        .await?
        .parse::<PackageBought>(StatusCode::CREATED)?;
    }
    Ok(())
}
