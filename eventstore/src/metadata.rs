//! Command metadata, stored with every event the command writes.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Who issued a command: the token's subject and role.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// The token's `sub`.
    pub subject: String,
    /// The token's `role` (`admin`, `staff`, ...).
    pub role: String,
}

/// Metadata of one command. Every event the command writes carries it, as
/// a flat JSON object of strings (cqrs-es reads metadata as
/// `HashMap<String, String>`), plus `recorded_at`, the wall-clock time of
/// the attempt that committed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandMetadata {
    /// Identity of this command; also the idempotency identity of its writes.
    pub command_id: Uuid,
    /// The request chain this command belongs to.
    pub correlation_id: Uuid,
    /// The command or event that caused this one (itself for a user action).
    pub causation_id: Uuid,
    /// Who issued it.
    pub actor: Actor,
    /// The HTTP request id (or a tool's run id).
    pub request_id: String,
    /// The use case's name, e.g. `book_treatment`.
    pub command: String,
}

impl CommandMetadata {
    /// Metadata for a new user action: fresh command id, correlated and
    /// caused by itself.
    pub fn new(actor: Actor, command: &str, request_id: impl Into<String>) -> Self {
        let id = Uuid::now_v7();
        Self {
            command_id: id,
            correlation_id: id,
            causation_id: id,
            actor,
            request_id: request_id.into(),
            command: command.to_string(),
        }
    }

    /// Metadata for an action taken by the engine itself (a tool, a matcher).
    pub fn system(command: &str) -> Self {
        Self::new(
            Actor {
                subject: "clinicbook".to_string(),
                role: "system".to_string(),
            },
            command,
            Uuid::now_v7().to_string(),
        )
    }

    /// The JSON text stored in the `metadata` column of each event.
    pub fn to_json(&self, recorded_at: DateTime<Utc>) -> String {
        let mut map = BTreeMap::new();
        map.insert("command_id", self.command_id.to_string());
        map.insert("correlation_id", self.correlation_id.to_string());
        map.insert("causation_id", self.causation_id.to_string());
        map.insert("actor", self.actor.subject.clone());
        map.insert("actor_role", self.actor.role.clone());
        map.insert("request_id", self.request_id.clone());
        map.insert("command", self.command.clone());
        map.insert(
            "recorded_at",
            recorded_at.to_rfc3339_opts(SecondsFormat::Micros, true),
        );
        // A map of strings always serialises.
        serde_json::to_string(&map).unwrap_or_else(|_| "{}".to_string())
    }
}
