//! The sandbox `docker` stand-in, built for the scenario tests (`CARGO_BIN_EXE_sandbox-docker`; named apart from the sandbox crate's own `docker`).
fn main() {
    std::process::exit(runbot_sandbox::standins::docker_main(std::env::args().skip(1).collect()));
}
