//! The `validate` function as a Cloud Run service (see the crate docs).
fn main() -> std::process::ExitCode {
    bifrost_cloudrun::main("validate")
}
