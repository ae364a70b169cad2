//! Store faults during command handling: each write the engine makes for a typed command is
//! made to fail in turn, and the reply must match what the store then holds — "nothing was
//! changed" only when nothing was, "created" only when the execution exists and will be
//! acted on.

use runbot_commands::model::ExecState;
use runbot_tests::harness::World;
use std::time::Duration;

/// What the store holds after the command, in the terms a reply may use.
#[derive(Debug, PartialEq)]
enum Held {
    Nothing,
    /// An execution that goes on (waiting for approval or running).
    Live,
    /// An execution that was stopped before anything ran.
    Cancelled,
}

#[tokio::test(flavor = "multi_thread")]
async fn each_failed_write_of_a_command_gets_a_reply_that_matches_the_store() {
    let mut seen = Vec::new();
    for n in 0..10 {
        let world = World::new().await;
        world.fail_write(n);
        let reply = world.cmd("console:alice", "/ops run hello promotions").await.message.text;
        // Give the runner time to act on whatever was stored.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let execs = world.executions().await;
        let held = match execs.as_slice() {
            [] => Held::Nothing,
            [e] if e.state == ExecState::Cancelled => Held::Cancelled,
            [_] => Held::Live,
            more => panic!("write {n}: one command made {} executions", more.len()),
        };
        let says_nothing = reply.contains("nothing was changed") || reply.contains("did nothing") || reply.contains("Nothing was changed");
        match held {
            Held::Nothing | Held::Cancelled => {
                assert!(says_nothing, "write {n} failed, the store holds {held:?}, yet the reply says: {reply}");
                assert_eq!(world.probes.count("hello-check"), 0, "write {n}: nothing may run: {reply}");
            }
            Held::Live => {
                assert!(!says_nothing, "write {n} failed and the reply says nothing changed, but R-1 is stored and goes on: {reply}");
                assert!(reply.contains("R-1"), "write {n}: the reply names the execution: {reply}");
                // Whatever the store holds of it is whole: its creation is on the record.
                let created = world.audit().await.into_iter().filter(|r| r.entry.kind == "execution").count();
                assert_eq!(created, 1, "write {n}: R-1 exists without its creation record");
            }
        }
        seen.push((n, held, reply));
    }
    assert!(seen.iter().any(|(_, h, _)| *h == Held::Nothing), "some failures stopped the command: {seen:#?}");
    assert!(seen.iter().any(|(_, h, r)| *h == Held::Live && r.contains("created")), "later failures left a live execution: {seen:#?}");
}
