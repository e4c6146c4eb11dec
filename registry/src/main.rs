//! The reference e-Qazyna registry; everything lives in the `kasip_registry` library.

fn main() {
    std::process::exit(kasip_registry::cli::main());
}
