// Rebuild when a migration is added: `sqlx::migrate!` embeds the files of
// `migrations/` at compile time but only tracks the ones that existed.
fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}
