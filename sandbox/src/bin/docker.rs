//! The sandbox `docker` stand-in as a program (see `runbot_sandbox::standins`).
fn main() {
    std::process::exit(runbot_sandbox::standins::docker_main(std::env::args().skip(1).collect()));
}
