//! Rebuilds the crate when a migration is added or changed: `sqlx::migrate!` embeds the migration files at compile
//! time, and on stable Rust the macro cannot tell cargo to watch them (sqlx's documented build script).

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
