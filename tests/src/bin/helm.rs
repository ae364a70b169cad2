//! The sandbox `helm` stand-in, built for the scenario tests (`CARGO_BIN_EXE_sandbox-helm`; named apart from the sandbox crate's own `helm`, whose output file it would collide with).
fn main() {
    std::process::exit(runbot_sandbox::standins::helm_main(std::env::args().skip(1).collect()));
}
