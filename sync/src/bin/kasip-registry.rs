//! The reference e-Qazyna registry; everything lives in `kasip_sync::registry`.

fn main() {
    std::process::exit(kasip_sync::registry::cli::main());
}
