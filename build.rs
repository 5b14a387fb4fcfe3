//! The migrations are embedded at compile time (`embed_migrations!`):
//! rebuild when one changes, not only when Rust code does.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
