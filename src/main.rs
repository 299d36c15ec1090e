//! The `callgate` binary: parses the command line and calls the library.

/// See the `mimalloc` entry in Cargo.toml for why.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    callgate::cli::main()
}
