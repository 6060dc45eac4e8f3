//! Finding the PostgreSQL and nats-server binaries, in made-up places.

use std::ffi::OsString;
use std::path::Path;

use clinicbook_localsvc::{find_nats_server_from, find_postgres_bin_from};

#[test]
fn missing_postgres_is_one_line_with_the_install_command() {
    let error = find_postgres_bin_from(
        Path::new("/nonexistent/postgresql"),
        Some(OsString::from("/nonexistent/bin")),
    )
    .err()
    .map(|e| e.to_string());
    assert_eq!(
        error.as_deref(),
        Some(
            "PostgreSQL server binaries not found under /nonexistent/postgresql/*/bin and PATH; \
             install with: apt-get install postgresql"
        )
    );
}

#[test]
fn missing_nats_is_one_line_with_the_install_command() {
    let error = find_nats_server_from(
        Some(OsString::from("/nonexistent/bin")),
        &["/nonexistent/sbin"],
    )
    .err()
    .map(|e| e.to_string());
    assert_eq!(
        error.as_deref(),
        Some("nats-server not found under PATH, /nonexistent/sbin; install with: apt-get install nats-server")
    );
}

/// Creates empty executables `programs` in `dir`.
fn fake_programs(dir: &Path, programs: &[&str]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for program in programs {
        let path = dir.join(program);
        std::fs::write(&path, "")?;
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    }
    Ok(())
}

#[test]
fn picks_the_newest_complete_postgres_version() -> std::io::Result<()> {
    let root = std::env::temp_dir().join(format!(
        "clinicbook-localsvc-find-{}",
        uuid::Uuid::new_v4().simple()
    ));
    for (version, programs) in [
        ("9.6", &["initdb", "pg_ctl", "postgres"][..]),
        ("13", &["initdb", "pg_ctl", "postgres"][..]),
        ("15", &["initdb", "pg_ctl", "postgres"][..]),
        // Incomplete: no server binary, so 15 must win.
        ("16", &["initdb", "pg_ctl"][..]),
    ] {
        fake_programs(&root.join(version).join("bin"), programs)?;
    }
    std::fs::create_dir_all(root.join("not-a-version").join("bin"))?;
    let found = find_postgres_bin_from(&root, None).ok();
    std::fs::remove_dir_all(&root)?;
    assert_eq!(found, Some(root.join("15").join("bin")));
    Ok(())
}

#[test]
fn falls_back_to_path_for_both() -> std::io::Result<()> {
    let root = std::env::temp_dir().join(format!(
        "clinicbook-localsvc-find-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let bin = root.join("bin");
    fake_programs(&bin, &["initdb", "pg_ctl", "postgres", "nats-server"])?;
    let path = std::env::join_paths([Path::new("/nonexistent/bin"), &bin])
        .map_err(std::io::Error::other)?;
    let postgres = find_postgres_bin_from(&root.join("no-such-root"), Some(path.clone())).ok();
    let nats = find_nats_server_from(Some(path), &[]).ok();
    std::fs::remove_dir_all(&root)?;
    assert_eq!(postgres, Some(bin.clone()));
    assert_eq!(nats, Some(bin.join("nats-server")));
    Ok(())
}
