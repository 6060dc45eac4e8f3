//! Keys kept on disk beside local state: files only their owner can read,
//! the audit signing key (`CLINICBOOK_AUDIT_KEY`, or `<var>/audit-key`
//! created on first use, like the token secret) and the master key of
//! patients' data keys (`CLINICBOOK_MASTER_KEY`, or `<var>/master-key`).

use std::path::Path;

use anyhow::Context;
use clinicbook_eventstore::checkpoint::AuditKey;
use clinicbook_eventstore::personal::MasterKey;
use secrecy::{ExposeSecret, SecretString};

/// Writes `contents` to `path`, readable by its owner only.
///
/// # Errors
/// The file cannot be written.
pub fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(contents.as_bytes())?;
    Ok(())
}

/// The file under `var_dir` that keeps the audit key when none is given.
#[must_use]
pub fn audit_key_file(var_dir: &Path) -> std::path::PathBuf {
    var_dir.join("audit-key")
}

/// The audit signing key: `given` (flag or `CLINICBOOK_AUDIT_KEY`) if set,
/// else the one in `<var_dir>/audit-key`; with `create`, a fresh key is
/// written there when there is none. The key itself is never logged.
///
/// # Errors
/// The key is malformed, there is none (without `create`), or the file
/// cannot be read or written.
pub fn audit_key(
    given: Option<&SecretString>,
    var_dir: &Path,
    create: bool,
) -> anyhow::Result<AuditKey> {
    if let Some(secret) = given {
        return AuditKey::from_hex(secret.expose_secret())
            .context("CLINICBOOK_AUDIT_KEY (--audit-key)");
    }
    let path = audit_key_file(var_dir);
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => {
            return AuditKey::from_hex(&text).with_context(|| format!("{}", path.display()));
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    anyhow::ensure!(
        create,
        "no audit key: set CLINICBOOK_AUDIT_KEY as for `serve`, run where `serve` keeps {}, \
         or give the server's public key (GET /v1/audit/public-key) with --public-key",
        path.display()
    );
    std::fs::create_dir_all(var_dir).with_context(|| format!("creating {}", var_dir.display()))?;
    let key = AuditKey::generate();
    write_private(&path, &key.secret_hex())?;
    tracing::info!(
        path = %path.display(),
        public_key = %key.public_key().to_hex(),
        "no CLINICBOOK_AUDIT_KEY given: created a random audit signing key"
    );
    Ok(key)
}

/// The master key of patients' data keys: `given` (flag or
/// `CLINICBOOK_MASTER_KEY`) if set, else the one in `<var_dir>/master-key`,
/// created there (random) on first use. The key itself is never logged.
///
/// # Errors
/// The key is malformed, or the file cannot be read or written.
pub fn master_key(given: Option<&SecretString>, var_dir: &Path) -> anyhow::Result<MasterKey> {
    if let Some(secret) = given {
        return MasterKey::from_hex(secret.expose_secret())
            .context("CLINICBOOK_MASTER_KEY (--master-key)");
    }
    let path = var_dir.join("master-key");
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => {
            return MasterKey::from_hex(&text).with_context(|| format!("{}", path.display()));
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    std::fs::create_dir_all(var_dir).with_context(|| format!("creating {}", var_dir.display()))?;
    let key = MasterKey::generate();
    write_private(&path, &key.secret_hex())?;
    tracing::info!(
        path = %path.display(),
        "no CLINICBOOK_MASTER_KEY given: created a random master key for patients' data keys"
    );
    Ok(key)
}
