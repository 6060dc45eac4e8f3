//! Read-model queries: what the analysts' and staff's read routes answer.
//!
//! Every query reads in one read-only, repeatable-read transaction with
//! `search_path` set to schema `read`, so the tables are named as the
//! projections' DDL names them and a query that reads several tables sees
//! them at one point of the projector's progress.

pub mod catalog;
pub mod csv;
pub mod detail;
pub mod holds;
pub mod patients;
pub mod reports;
pub mod schedule;

use sqlx::{Postgres, Transaction};

use crate::checkpoint::READ_SCHEMA;
use crate::{ProjectionError, ReadModels};

impl ReadModels {
    /// A read-only transaction over the live read models.
    pub(crate) async fn read_connection(
        &self,
    ) -> Result<Transaction<'static, Postgres>, ProjectionError> {
        let mut tx = self.pool().begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await?;
        sqlx::query("SELECT set_config('search_path', $1, true)")
            .bind(format!("\"{READ_SCHEMA}\", public"))
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }
}
