//! What every projection's `apply` shares: decoding an event with the
//! domain's own types, the one declaration of each read-model table, and
//! set-based writes of many rows in one statement.
//!
//! Each table is declared once: its row struct, declared with [`row!`]
//! (the fields are the columns, in order, and each field's Rust type
//! gives the column's SQL type and whether it takes NULL), and a
//! [`Table`] naming it, its key and its indexes. The DDL a projection
//! creates its tables with, the column lists its statements name and the
//! row type it loads and writes all come from that one declaration.
//!
//! Projections apply a batch in three steps: load the rows the batch
//! touches (one `SELECT … IN (…)` per table), fold the events into them
//! in memory, and write them back with one statement per table. Rows go
//! to PostgreSQL as one JSON array expanded by `json_to_recordset`, so a
//! batch of a thousand events costs a handful of round trips, whatever
//! its size.

use std::collections::HashMap;
use std::hash::Hash;
use std::marker::PhantomData;

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use chrono_tz::Tz;
use clinicbook_domain::clinic::ResourceKind;
use clinicbook_domain::hold::HoldStatus;
use clinicbook_domain::package::PackagePaymentKind;
use clinicbook_domain::patient::Language;
use clinicbook_domain::reservation::{PaymentKind, ReservationStatus};
use clinicbook_domain::wallet::TransactionKind;
use clinicbook_eventstore::FeedEvent;
use serde::de::DeserializeOwned;
use serde::Serialize;
use sqlx::types::Json;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::ProjectionError;

/// The event's payload as the domain type `T` (its event enum), so a
/// change of the domain's events is seen by the compiler here too.
///
/// # Errors
/// [`ProjectionError::Decode`] (logged and counted, see [`invalid`]).
pub(crate) fn decode<T: DeserializeOwned>(event: &FeedEvent) -> Result<T, ProjectionError> {
    T::deserialize(&event.payload).map_err(|e| invalid(event, e))
}

/// The aggregate id of `event` as a UUID (every aggregate but calendars
/// and promo codes is keyed by one).
///
/// # Errors
/// [`ProjectionError::Decode`] (logged and counted, see [`invalid`]).
pub(crate) fn uuid_id(event: &FeedEvent) -> Result<Uuid, ProjectionError> {
    Uuid::parse_str(&event.aggregate_id).map_err(|e| invalid(event, e))
}

/// A clinic's IANA timezone as its `ClinicRegistered` event names it.
///
/// # Errors
/// [`ProjectionError::Decode`] for a name chrono-tz does not know: the
/// projection stops at that event rather than guess UTC (logged and
/// counted, see [`invalid`]).
pub(crate) fn timezone(event: &FeedEvent, name: &str) -> Result<Tz, ProjectionError> {
    name.parse()
        .map_err(|_| invalid(event, format!("{name:?} is not an IANA timezone")))
}

/// A decode error for `event`, logged and counted in
/// `clinicbook_projection_invalid_events_total` (by event type): a stored
/// event a projection cannot read stops it there, and is never replaced
/// by a default.
pub(crate) fn invalid(event: &FeedEvent, reason: impl std::fmt::Display) -> ProjectionError {
    let error = ProjectionError::decode(event, reason);
    tracing::error!(%error, position = event.position, "a stored event cannot be projected");
    metrics::counter!(
        "clinicbook_projection_invalid_events_total",
        "event_type" => event.event_type.clone()
    )
    .increment(1);
    error
}

/// A row of `table` that does not decode as its row type (a column holds
/// a value the type does not know, such as an unknown kind), logged and
/// counted in `clinicbook_read_model_invalid_rows_total` (by table): the
/// read fails rather than answer a guess.
pub(crate) fn invalid_row(table: &'static str, reason: impl std::fmt::Display) -> ProjectionError {
    let error = ProjectionError::InvalidRow {
        table,
        reason: reason.to_string(),
    };
    tracing::error!(%error, "a read-model row cannot be read");
    metrics::counter!("clinicbook_read_model_invalid_rows_total", "table" => table).increment(1);
    error
}

/// Rows of `SELECT row_to_json(t) …` as `T`; a row that does not decode
/// is an [`invalid_row`] of `table`.
///
/// # Errors
/// The database failed, or a row does not decode.
pub(crate) async fn json_rows<T: DeserializeOwned + Send + Unpin + 'static>(
    query: sqlx::query::QueryScalar<'_, sqlx::Postgres, Json<T>, sqlx::postgres::PgArguments>,
    conn: &mut PgConnection,
    table: &'static str,
) -> Result<Vec<T>, ProjectionError> {
    match query.fetch_all(&mut *conn).await {
        Ok(rows) => Ok(rows.into_iter().map(|Json(row)| row).collect()),
        Err(sqlx::Error::ColumnDecode { source, .. }) => Err(invalid_row(table, source)),
        Err(e) => Err(e.into()),
    }
}

/// Whether the table `name` exists in `read` yet (a projector creates its
/// tables when it first runs; the workers that read work tables may ask
/// before).
///
/// # Errors
/// The database failed.
pub(crate) async fn read_table_exists<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    name: &str,
) -> Result<bool, ProjectionError> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_tables WHERE schemaname = 'read' AND tablename = $1)",
    )
    .bind(name)
    .fetch_one(executor)
    .await?)
}

/// The distinct values of `ids`, sorted.
pub(crate) fn distinct<K: Ord>(mut ids: Vec<K>) -> Vec<K> {
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// The [`crate::ApplyFn`] of an `async fn(&mut PgConnection, &[FeedEvent])`
/// that applies a projection's batch: the boxing every projection needs,
/// written once.
macro_rules! apply_fn {
    ($batch:path) => {{
        fn apply<'a>(
            conn: &'a mut sqlx::PgConnection,
            events: &'a [clinicbook_eventstore::FeedEvent],
        ) -> futures::future::BoxFuture<'a, Result<(), $crate::ProjectionError>> {
            Box::pin($batch(conn, events))
        }
        apply
    }};
}
pub(crate) use apply_fn;

/// How a field's Rust type is stored: the SQL type of its column, and
/// whether the column may be NULL (`Option` fields only).
pub trait SqlType {
    /// The column's SQL type, e.g. `uuid`.
    const SQL: &'static str;
    /// Whether the column takes NULL.
    const NULLABLE: bool = false;
}

macro_rules! sql_types {
    ($($ty:ty => $sql:literal),+ $(,)?) => {
        $(impl SqlType for $ty {
            const SQL: &'static str = $sql;
        })+
    };
}

sql_types! {
    Uuid => "uuid",
    String => "text",
    i64 => "bigint",
    i32 => "integer",
    i16 => "smallint",
    bool => "boolean",
    DateTime<Utc> => "timestamptz",
    NaiveDate => "date",
    NaiveTime => "time",
    Vec<Uuid> => "uuid[]",
    serde_json::Value => "jsonb",
    // Typed names: stored as the enum's one name (serde's `snake_case`).
    Tz => "text",
    ReservationStatus => "text",
    HoldStatus => "text",
    ResourceKind => "text",
    TransactionKind => "text",
    PaymentKind => "text",
    PackagePaymentKind => "text",
    Language => "text",
}

impl<T: SqlType> SqlType for Option<T> {
    const SQL: &'static str = T::SQL;
    const NULLABLE: bool = true;
}

/// One column of a read-model table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Column {
    /// Its name (the row struct's field).
    pub name: &'static str,
    /// Its SQL type (see [`SqlType`]).
    pub sql: &'static str,
    /// Whether it takes NULL (an `Option` field).
    pub nullable: bool,
}

/// A row struct declared with [`row!`]: its columns, in field order.
pub trait Columns {
    /// Every column.
    const COLUMNS: &'static [Column];
}

/// Declares a read-model row struct: its fields are the table's columns,
/// in order, and their Rust types the columns' SQL types (see
/// [`SqlType`]); the struct gets [`Columns`].
macro_rules! row {
    (
        $(#[$meta:meta])*
        $vis:vis struct $row:ident {
            $( $(#[$field_meta:meta])* $field:ident : $ty:ty ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        $vis struct $row {
            $( $(#[$field_meta])* pub $field: $ty, )+
        }

        impl $crate::models::sql::Columns for $row {
            const COLUMNS: &'static [$crate::models::sql::Column] = &[$(
                $crate::models::sql::Column {
                    name: stringify!($field),
                    sql: <$ty as $crate::models::sql::SqlType>::SQL,
                    nullable: <$ty as $crate::models::sql::SqlType>::NULLABLE,
                },
            )+];
        }
    };
}
pub(crate) use row;

/// An index of a read-model table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Index {
    /// Its name.
    pub name: &'static str,
    /// What it indexes, e.g. `(clinic_id, position)`.
    pub on: &'static str,
    /// Only the rows in this status (a partial index), if given.
    pub status: Option<ReservationStatus>,
    /// Only the rows this SQL condition holds for (a partial index on
    /// something other than a status, e.g. `NOT handled`), if given.
    pub condition: Option<&'static str>,
}

impl Index {
    /// An index `name` on `on`.
    #[must_use]
    pub const fn on(name: &'static str, on: &'static str) -> Self {
        Self {
            name,
            on,
            status: None,
            condition: None,
        }
    }

    /// The same index over the rows whose `status` is `status` only.
    #[must_use]
    pub const fn only(self, status: ReservationStatus) -> Self {
        Self {
            status: Some(status),
            ..self
        }
    }

    /// The same index over the rows `condition` (SQL) holds for only.
    #[must_use]
    pub const fn when(self, condition: &'static str) -> Self {
        Self {
            condition: Some(condition),
            ..self
        }
    }
}

/// A read-model table: its unqualified name, primary key and indexes; its
/// columns are its row struct's ([`Columns`]). What a projection creates
/// ([`TableDef::ddl`]) and what `apply` and the queries read and write.
#[derive(Debug)]
pub struct TableDef {
    /// Unqualified name (resolved through `search_path`).
    pub name: &'static str,
    /// Primary key columns.
    pub key: &'static [&'static str],
    /// Every column, in the row struct's field order.
    pub columns: &'static [Column],
    /// Its indexes.
    pub indexes: &'static [Index],
}

impl TableDef {
    /// `CREATE TABLE IF NOT EXISTS` and `CREATE INDEX IF NOT EXISTS`
    /// statements for this table.
    #[must_use]
    pub fn ddl(&self) -> String {
        let mut lines: Vec<String> = self
            .columns
            .iter()
            .map(|column| {
                let null = if column.nullable { "" } else { " NOT NULL" };
                format!("    {} {}{null}", column.name, column.sql)
            })
            .collect();
        lines.push(format!("    PRIMARY KEY ({})", self.key.join(", ")));
        let mut ddl = format!(
            "CREATE TABLE IF NOT EXISTS {} (\n{}\n);\n",
            self.name,
            lines.join(",\n")
        );
        for index in self.indexes {
            let only = match (index.status, index.condition) {
                (Some(status), _) => format!(" WHERE status = '{}'", status.as_str()),
                (None, Some(condition)) => format!(" WHERE {condition}"),
                (None, None) => String::new(),
            };
            ddl.push_str(&format!(
                "CREATE INDEX IF NOT EXISTS {} ON {} {}{only};\n",
                index.name, self.name, index.on
            ));
        }
        ddl
    }
}

/// A [`TableDef`] whose rows are `R`: the only way to name a read-model
/// table, so its rows are loaded and written as its own row type.
pub struct Table<R> {
    /// The table.
    pub def: TableDef,
    rows: PhantomData<fn() -> R>,
}

impl<R> std::fmt::Debug for Table<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.def.fmt(f)
    }
}

impl<R: Columns> Table<R> {
    /// The table `name` of `R` rows, keyed by `key`, with `indexes`.
    #[must_use]
    pub const fn new(
        name: &'static str,
        key: &'static [&'static str],
        indexes: &'static [Index],
    ) -> Self {
        Self {
            def: TableDef {
                name,
                key,
                columns: R::COLUMNS,
                indexes,
            },
            rows: PhantomData,
        }
    }
}

impl TableDef {
    fn names(&self) -> String {
        self.columns
            .iter()
            .map(|column| column.name)
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn definitions<'a>(columns: impl Iterator<Item = &'a Column>) -> String {
        columns
            .map(|column| format!("{} {}", column.name, column.sql))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl<R> Table<R>
where
    R: DeserializeOwned + Serialize + Send + Sync + Unpin + 'static,
{
    /// The rows whose `column` is one of `ids` (deserialised from
    /// `row_to_json`).
    ///
    /// # Errors
    /// The database failed, or a row does not decode as `R`
    /// ([`invalid_row`]).
    pub async fn load<K>(
        &self,
        conn: &mut PgConnection,
        column: &str,
        ids: &[K],
    ) -> Result<Vec<R>, ProjectionError>
    where
        K: Serialize + Sync,
    {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ty = self
            .def
            .columns
            .iter()
            .find(|c| c.name == column)
            .map_or("text", |c| c.sql);
        let sql = format!(
            "SELECT row_to_json(t) FROM {table} t
              WHERE {column} IN (SELECT value::{ty} FROM json_array_elements_text($1::json))",
            table = self.def.name,
        );
        json_rows(
            sqlx::query_scalar(&sql).bind(Json(ids)),
            conn,
            self.def.name,
        )
        .await
    }

    /// [`Table::load`] by the first key column, as a map by `key`.
    ///
    /// # Errors
    /// As [`Table::load`].
    pub async fn load_by<K>(
        &self,
        conn: &mut PgConnection,
        ids: &[K],
        key: impl Fn(&R) -> K + Send,
    ) -> Result<HashMap<K, R>, ProjectionError>
    where
        K: Serialize + Sync + Eq + Hash,
    {
        let rows = self.load(conn, self.def.key[0], ids).await?;
        Ok(rows.into_iter().map(|row| (key(&row), row)).collect())
    }

    /// The rows of the streams `events` are of (aggregates keyed by a
    /// UUID, the table's first key column), by id: where a projection's
    /// batch starts, before it folds the events into them.
    ///
    /// # Errors
    /// An event's id is not a UUID, the database failed, or a row does not
    /// decode.
    pub async fn load_streams(
        &self,
        conn: &mut PgConnection,
        events: &[&FeedEvent],
        key: impl Fn(&R) -> Uuid + Send,
    ) -> Result<HashMap<Uuid, R>, ProjectionError> {
        let ids: Vec<Uuid> = events
            .iter()
            .map(|e| uuid_id(e))
            .collect::<Result<_, _>>()?;
        self.load_by(conn, &distinct(ids), key).await
    }

    /// Writes back the rows a batch folded (as [`Table::upsert`]), in key
    /// order so concurrent writers lock rows in one order.
    ///
    /// # Errors
    /// The database failed.
    pub async fn upsert_all(
        &self,
        conn: &mut PgConnection,
        rows: HashMap<Uuid, R>,
    ) -> Result<(), ProjectionError> {
        let mut rows: Vec<(Uuid, R)> = rows.into_iter().collect();
        rows.sort_by_key(|(id, _)| *id);
        let rows: Vec<R> = rows.into_iter().map(|(_, row)| row).collect();
        self.upsert(conn, &rows).await
    }

    /// Inserts `rows`, replacing the rows with the same key.
    ///
    /// # Errors
    /// The database failed.
    pub async fn upsert(&self, conn: &mut PgConnection, rows: &[R]) -> Result<(), ProjectionError> {
        let updates = self
            .def
            .columns
            .iter()
            .filter(|c| !self.def.key.contains(&c.name))
            .map(|c| format!("{name} = EXCLUDED.{name}", name = c.name))
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
    ///
    /// # Errors
    /// The database failed.
    pub async fn insert_new(
        &self,
        conn: &mut PgConnection,
        rows: &[R],
    ) -> Result<(), ProjectionError> {
        self.insert(conn, rows, "NOTHING").await
    }

    async fn insert(
        &self,
        conn: &mut PgConnection,
        rows: &[R],
        action: &str,
    ) -> Result<(), ProjectionError> {
        if rows.is_empty() {
            return Ok(());
        }
        let def = &self.def;
        let sql = format!(
            "INSERT INTO {table} ({names})
             SELECT {names} FROM json_to_recordset($1::json) AS x({definitions})
             ON CONFLICT ({key}) DO {action}",
            table = def.name,
            names = def.names(),
            definitions = TableDef::definitions(def.columns.iter()),
            key = def.key.join(", "),
        );
        sqlx::query(&sql)
            .bind(Json(rows))
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    /// Deletes the rows whose key is one of `keys` (each serialised as an
    /// object with the key's columns).
    ///
    /// # Errors
    /// The database failed.
    pub async fn delete<T: Serialize + Sync>(
        &self,
        conn: &mut PgConnection,
        keys: &[T],
    ) -> Result<(), ProjectionError> {
        if keys.is_empty() {
            return Ok(());
        }
        let def = &self.def;
        let key = def.key.join(", ");
        let sql = format!(
            "DELETE FROM {table} WHERE ({key}) IN
               (SELECT {key} FROM json_to_recordset($1::json) AS x({definitions}))",
            table = def.name,
            definitions =
                TableDef::definitions(def.columns.iter().filter(|c| def.key.contains(&c.name))),
        );
        sqlx::query(&sql)
            .bind(Json(keys))
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    /// Deletes the rows whose first key column is `id`.
    ///
    /// # Errors
    /// The database failed.
    pub async fn delete_where(
        &self,
        conn: &mut PgConnection,
        id: Uuid,
    ) -> Result<(), ProjectionError> {
        sqlx::query(&format!(
            "DELETE FROM {table} WHERE {column} = $1",
            table = self.def.name,
            column = self.def.key[0],
        ))
        .bind(id)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    row! {
        /// A row for the test.
        #[derive(Serialize, serde::Deserialize)]
        struct ThingRow {
            thing_id: Uuid,
            name: Option<String>,
            status: ReservationStatus,
            held: Vec<Uuid>,
        }
    }

    static THINGS: Table<ThingRow> = Table::new(
        "x_things",
        &["thing_id"],
        &[
            Index::on("x_things_name", "(name)"),
            Index::on("x_things_waiting", "(thing_id)").only(ReservationStatus::Waitlisted),
        ],
    );

    #[test]
    fn the_ddl_comes_from_the_row_type() {
        assert_eq!(
            THINGS.def.ddl(),
            "CREATE TABLE IF NOT EXISTS x_things (
    thing_id uuid NOT NULL,
    name text,
    status text NOT NULL,
    held uuid[] NOT NULL,
    PRIMARY KEY (thing_id)
);
CREATE INDEX IF NOT EXISTS x_things_name ON x_things (name);
CREATE INDEX IF NOT EXISTS x_things_waiting ON x_things (thing_id) WHERE status = 'waitlisted';
"
        );
    }

    #[test]
    fn a_partial_index_may_name_any_condition() {
        static FLAGGED: Table<ThingRow> = Table::new(
            "x_flagged",
            &["thing_id"],
            &[Index::on("x_flagged_open", "(thing_id)").when("NOT held = '{}'")],
        );
        assert!(FLAGGED.def.ddl().ends_with(
            "CREATE INDEX IF NOT EXISTS x_flagged_open ON x_flagged (thing_id) WHERE NOT held = '{}';\n"
        ));
    }
}
