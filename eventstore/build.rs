//! Rebuilds the crate when a migration is added or changed: `sqlx::migrate!`
//! embeds `../migrations` at compile time but does not track the folder.

fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
