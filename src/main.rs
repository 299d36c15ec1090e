//! The `callgate` binary: parses the command line and calls the library.

fn main() -> std::process::ExitCode {
    callgate::cli::main()
}
