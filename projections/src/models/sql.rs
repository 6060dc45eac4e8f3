//! What every projection's `apply` shares: decoding an event with the
//! domain's own types, exact instants, and set-based writes of many rows
//! in one statement.
//!
//! Projections apply a batch in three steps: load the rows the batch
//! touches (one `SELECT … = ANY($1)` per table), fold the events into them
//! in memory, and write them back with one statement per table. Rows go
//! to PostgreSQL as one JSON array expanded by `json_to_recordset`, so a
//! batch of a thousand events costs a handful of round trips, whatever
//! its size.

use chrono::{DateTime, Duration, Timelike, Utc};
use clinicbook_eventstore::FeedEvent;
use serde::de::DeserializeOwned;
use serde::Serialize;
use sqlx::types::Json;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::ProjectionError;

/// The event's payload as the domain type `T` (its event enum), so a
/// change of the domain's events is seen by the compiler here too.
pub(crate) fn decode<T: DeserializeOwned>(event: &FeedEvent) -> Result<T, ProjectionError> {
    T::deserialize(&event.payload).map_err(|e| ProjectionError::decode(event, e))
}

/// The aggregate id of `event` as a UUID (every aggregate but calendars
/// and promo codes is keyed by one).
pub(crate) fn uuid_id(event: &FeedEvent) -> Result<Uuid, ProjectionError> {
    Uuid::parse_str(&event.aggregate_id).map_err(|e| ProjectionError::decode(event, e))
}

/// An instant split for storage: PostgreSQL keeps microseconds, the
/// domain's instants may carry nanoseconds (the clock's). The first part
/// is the instant cut to the microsecond, the second the nanoseconds cut
/// off (0..=999), kept in a `*_ns` column so answers give the instant
/// exactly as the event recorded it.
pub(crate) fn split(at: DateTime<Utc>) -> (DateTime<Utc>, i16) {
    let below = at.nanosecond() % 1_000;
    let ns = i16::try_from(below).unwrap_or(0);
    (at - Duration::nanoseconds(i64::from(ns)), ns)
}

/// The instant [`split`] stored.
pub(crate) fn join(at: DateTime<Utc>, ns: i16) -> DateTime<Utc> {
    at + Duration::nanoseconds(i64::from(ns))
}

/// [`split`] of an optional instant.
pub(crate) fn split_opt(at: Option<DateTime<Utc>>) -> (Option<DateTime<Utc>>, Option<i16>) {
    match at {
        Some(at) => {
            let (at, ns) = split(at);
            (Some(at), Some(ns))
        }
        None => (None, None),
    }
}

/// [`join`] of an optional instant.
pub(crate) fn join_opt(at: Option<DateTime<Utc>>, ns: Option<i16>) -> Option<DateTime<Utc>> {
    at.map(|at| join(at, ns.unwrap_or(0)))
}

/// A read-model table as `apply` writes it: its unqualified name, primary
/// key and columns with their SQL types (the order and names of the
/// fields of its row struct).
pub(crate) struct Table {
    /// Unqualified name (resolved through `search_path`).
    pub name: &'static str,
    /// Primary key columns.
    pub key: &'static [&'static str],
    /// Every column with its type, e.g. `("clinic_id", "uuid")`.
    pub columns: &'static [(&'static str, &'static str)],
}

impl Table {
    fn names(&self) -> String {
        self.columns
            .iter()
            .map(|(name, _)| *name)
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn definitions(columns: &[(&str, &str)]) -> String {
        columns
            .iter()
            .map(|(name, ty)| format!("{name} {ty}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The rows whose `column` is one of `ids`, as `T` (deserialised from
    /// `row_to_json`, so `T`'s fields are the table's columns).
    pub async fn load<T: DeserializeOwned + Send + Unpin + 'static, K>(
        &self,
        conn: &mut PgConnection,
        column: &str,
        ids: &[K],
    ) -> Result<Vec<T>, ProjectionError>
    where
        K: Serialize + Sync,
    {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ty = self
            .columns
            .iter()
            .find(|(name, _)| *name == column)
            .map_or("text", |(_, ty)| *ty);
        let sql = format!(
            "SELECT row_to_json(t) FROM {table} t
              WHERE {column} IN (SELECT value::{ty} FROM json_array_elements_text($1::json))",
            table = self.name,
        );
        let rows: Vec<Json<T>> = sqlx::query_scalar(&sql)
            .bind(Json(ids))
            .fetch_all(&mut *conn)
            .await?;
        Ok(rows.into_iter().map(|Json(row)| row).collect())
    }

    /// Inserts `rows`, replacing the rows with the same key.
    pub async fn upsert<T: Serialize + Sync>(
        &self,
        conn: &mut PgConnection,
        rows: &[T],
    ) -> Result<(), ProjectionError> {
        let updates = self
            .columns
            .iter()
            .filter(|(name, _)| !self.key.contains(name))
            .map(|(name, _)| format!("{name} = EXCLUDED.{name}"))
            .collect::<Vec<_>>()
            .join(", ");
        let action = if updates.is_empty() {
            "NOTHING".to_owned()
        } else {
            format!("UPDATE SET {updates}")
        };
        self.insert(conn, rows, &action).await
    }

    /// Inserts `rows`, keeping the rows already there with the same key
    /// (append-only tables: a history entry is written once).
    pub async fn insert_new<T: Serialize + Sync>(
        &self,
        conn: &mut PgConnection,
        rows: &[T],
    ) -> Result<(), ProjectionError> {
        self.insert(conn, rows, "NOTHING").await
    }

    async fn insert<T: Serialize + Sync>(
        &self,
        conn: &mut PgConnection,
        rows: &[T],
        action: &str,
    ) -> Result<(), ProjectionError> {
        if rows.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "INSERT INTO {table} ({names})
             SELECT {names} FROM json_to_recordset($1::json) AS x({definitions})
             ON CONFLICT ({key}) DO {action}",
            table = self.name,
            names = self.names(),
            definitions = Self::definitions(self.columns),
            key = self.key.join(", "),
        );
        sqlx::query(&sql)
            .bind(Json(rows))
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    /// Deletes the rows whose key is one of `keys` (each serialised as an
    /// object with the key's columns).
    pub async fn delete<T: Serialize + Sync>(
        &self,
        conn: &mut PgConnection,
        keys: &[T],
    ) -> Result<(), ProjectionError> {
        if keys.is_empty() {
            return Ok(());
        }
        let key_columns: Vec<(&str, &str)> = self
            .columns
            .iter()
            .filter(|(name, _)| self.key.contains(name))
            .copied()
            .collect();
        let key = self.key.join(", ");
        let sql = format!(
            "DELETE FROM {table} WHERE ({key}) IN
               (SELECT {key} FROM json_to_recordset($1::json) AS x({definitions}))",
            table = self.name,
            definitions = Self::definitions(&key_columns),
        );
        sqlx::query(&sql)
            .bind(Json(keys))
            .execute(&mut *conn)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn split_and_join_keep_nanoseconds() {
        let at: DateTime<Utc> = "2030-01-07T09:00:00.123456789Z".parse().unwrap();
        let (micro, ns) = split(at);
        assert_eq!(micro.to_rfc3339(), "2030-01-07T09:00:00.123456+00:00");
        assert_eq!(ns, 789);
        assert_eq!(join(micro, ns), at);
        let whole: DateTime<Utc> = "2030-01-07T09:00:00Z".parse().unwrap();
        assert_eq!(split(whole), (whole, 0));
    }
}
