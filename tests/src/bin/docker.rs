//! The sandbox `docker` stand-in, built for the scenario tests (`CARGO_BIN_EXE_docker`).
fn main() {
    std::process::exit(runbot_sandbox::standins::docker_main(std::env::args().skip(1).collect()));
}
