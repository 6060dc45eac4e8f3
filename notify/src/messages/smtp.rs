//! The SMTP relay messages go to (`CLINICBOOK_SMTP_URL`), with lettre's
//! tokio transport, and its state for `/readyz`.
//!
//! `smtp://host:port` upgrades to TLS with STARTTLS when the server offers
//! it (lettre's `tls=opportunistic`), `smtp://…?tls=required` insists on
//! it, `smtps://` speaks TLS from the start; credentials go in the URL.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::MessageError;

/// Where the relay stands, as `/readyz` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RelayState {
    /// No `CLINICBOOK_SMTP_URL`: email messages wait queued.
    NotConfigured,
    /// Nothing sent yet.
    Unknown,
    /// The last conversation succeeded.
    Ok,
    /// The last conversation failed.
    Failing,
}

impl RelayState {
    /// The name `/readyz` answers.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            RelayState::NotConfigured => "not_configured",
            RelayState::Unknown => "unknown",
            RelayState::Ok => "ok",
            RelayState::Failing => "degraded",
        }
    }
}

/// The SMTP relay, if one is configured. Cheap to clone.
#[derive(Clone)]
pub struct Relay {
    transport: Option<AsyncSmtpTransport<Tokio1Executor>>,
    state: Arc<AtomicU8>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

impl Relay {
    /// The relay at `url` (none: not configured), each conversation
    /// limited to `timeout`.
    ///
    /// # Errors
    /// The URL is not an SMTP URL lettre takes.
    pub fn new(url: Option<&str>, timeout: Duration) -> Result<Self, MessageError> {
        let transport = match url.map(str::trim).filter(|u| !u.is_empty()) {
            None => None,
            Some(url) => {
                let url = opportunistic(url);
                let builder = AsyncSmtpTransport::<Tokio1Executor>::from_url(&url)
                    .map_err(|e| MessageError::Send(format!("CLINICBOOK_SMTP_URL: {e}")))?;
                Some(builder.timeout(Some(timeout)).build())
            }
        };
        let state = if transport.is_some() {
            RelayState::Unknown
        } else {
            RelayState::NotConfigured
        };
        Ok(Self {
            transport,
            state: Arc::new(AtomicU8::new(state as u8)),
        })
    }

    /// No relay: email messages wait queued.
    #[must_use]
    pub fn none() -> Self {
        Self {
            transport: None,
            state: Arc::new(AtomicU8::new(RelayState::NotConfigured as u8)),
        }
    }

    /// Whether a relay is configured.
    #[must_use]
    pub fn configured(&self) -> bool {
        self.transport.is_some()
    }

    /// Where the relay stands.
    #[must_use]
    pub fn state(&self) -> RelayState {
        match self.state.load(Ordering::Relaxed) {
            x if x == RelayState::NotConfigured as u8 => RelayState::NotConfigured,
            x if x == RelayState::Ok as u8 => RelayState::Ok,
            x if x == RelayState::Failing as u8 => RelayState::Failing,
            _ => RelayState::Unknown,
        }
    }

    /// Asks the relay whether it takes connections (EHLO, then QUIT), and
    /// answers where it stands; `NotConfigured` without one. A probe never
    /// waits longer than `timeout`.
    pub async fn probe(&self, timeout: Duration) -> RelayState {
        let Some(transport) = &self.transport else {
            return RelayState::NotConfigured;
        };
        let state = match tokio::time::timeout(timeout, transport.test_connection()).await {
            Ok(Ok(true)) => RelayState::Ok,
            Ok(Ok(false)) | Ok(Err(_)) | Err(_) => RelayState::Failing,
        };
        self.state.store(state as u8, Ordering::Relaxed);
        state
    }

    /// Hands `message` to the relay.
    ///
    /// # Errors
    /// No relay is configured, or the conversation failed.
    pub async fn send(&self, message: Message) -> Result<(), MessageError> {
        let Some(transport) = &self.transport else {
            return Err(MessageError::Send("no SMTP relay configured".to_owned()));
        };
        match transport.send(message).await {
            Ok(_) => {
                self.state.store(RelayState::Ok as u8, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                self.state
                    .store(RelayState::Failing as u8, Ordering::Relaxed);
                Err(MessageError::Send(e.to_string()))
            }
        }
    }
}

/// `smtp://` without a `tls` parameter as lettre's `tls=opportunistic`
/// (STARTTLS when offered); every other URL as it is.
fn opportunistic(url: &str) -> String {
    if !url.starts_with("smtp://") || url.contains("tls=") {
        return url.to_owned();
    }
    let joiner = if url.contains('?') { '&' } else { '?' };
    format!("{url}{joiner}tls=opportunistic")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_smtp_urls_upgrade_when_offered() {
        assert_eq!(
            opportunistic("smtp://127.0.0.1:2525"),
            "smtp://127.0.0.1:2525?tls=opportunistic"
        );
        assert_eq!(
            opportunistic("smtp://h:25?tls=required"),
            "smtp://h:25?tls=required"
        );
        assert_eq!(opportunistic("smtps://h"), "smtps://h");
    }
}
