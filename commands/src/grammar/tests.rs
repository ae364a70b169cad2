//! Table tests for the parser: good input gives the typed command, bad input a specific message
//! plus the usage line of the command concerned.

use super::*;

fn err(input: &str) -> ParseError {
    match parse(input) {
        Err(e) => e,
        Ok(c) => panic!("{input:?} parsed as {c:?}, expected an error"),
    }
}

#[test]
fn accepts_the_whole_command_surface() {
    let ok = [
        "/ops deploy promotions v1.2.5",
        "deploy promotions v1.2.5 --env prod --dry-run",
        "/ops rollback promotions",
        "/ops rollback promotions --to v1.2.4",
        "/ops rollback promotions --to=7 --env staging",
        "/ops restore promotions-db --date 2023-10-27T10:00:00Z",
        "/ops restore promotions-db --date \"2023-10-27T10:00:00+02:00\" --source s3://backups-bucket/pg --dry-run",
        "/ops restart promotions-api",
        "/ops restart promotions-api-7c9f-x2x4z --env prod",
        "/ops backup status promotions-db",
        "/ops backup now promotions-db",
        "/ops backup prune promotions-db",
        "/ops status",
        "/ops status R-42",
        "/ops cancel R-42",
        "/ops history",
        "/ops history promotions --limit 5",
        "/ops whoami",
        "/ops help",
        "/ops help restore",
        "/ops run cache-flush promotions --set dir=tmp --env prod",
    ];
    for input in ok {
        assert!(parse(input).is_ok(), "{input}: {:?}", parse(input));
    }
}

#[test]
fn typed_values_come_out_typed() {
    assert_eq!(
        parse("/ops deploy promotions v1.2.5 --env prod").unwrap(),
        Command::Deploy { service: "promotions".into(), version: Version("v1.2.5".into()), env: Some("prod".into()), dry_run: false }
    );
    assert_eq!(
        parse("rollback promotions --to 7").unwrap(),
        Command::Rollback { service: "promotions".into(), to: Some(RollbackTo::Revision(7)), env: None, dry_run: false }
    );
    match parse("restore promotions-db --date 2023-10-27T10:00:00Z --source s3://backups-bucket/pg/").unwrap() {
        Command::Restore { date, source: Some(src), .. } => {
            assert_eq!(date.to_string(), "2023-10-27T10:00:00+00:00");
            assert_eq!(src.to_string(), "s3://backups-bucket/pg");
        }
        other => panic!("{other:?}"),
    }
    match parse("restore promotions-db --date latest").unwrap() {
        Command::Restore { date, .. } => assert_eq!((date, date.to_string()), (crate::grammar::RestoreDate::Latest, "latest".to_string())),
        other => panic!("{other:?}"),
    }
    assert_eq!(parse("status r-42").unwrap(), Command::Status { id: Some(ExecutionId(42)) });
    assert_eq!(parse("/ops timeline R-5").unwrap(), Command::Timeline { id: ExecutionId(5) });
    assert_eq!(parse("history").unwrap(), Command::History { service: None, limit: 10 });
    assert_eq!(parse("").unwrap(), Command::Help { topic: None });
    assert_eq!(parse("/ops").unwrap(), Command::Help { topic: None });
}

/// Each malformed input, the words its message must contain, and the usage line expected.
#[test]
fn malformed_input_gets_a_specific_message_and_usage() {
    let deploy = "/ops deploy <service> <version> [--env <env>] [--dry-run]";
    let restore = "/ops restore <database> --date <RFC3339> [--source <s3://bucket/prefix>] [--dry-run]";
    let general = "/ops <deploy|rollback|restore|restart|backup|run|status|timeline|cancel|history|whoami|help>";
    let cases: &[(&str, &str, &str)] = &[
        ("/ops frobnicate x", "Unknown command 'frobnicate'", general),
        ("/ops deploy promotions", "Missing <version>", deploy),
        ("/ops deploy", "Missing <service>", deploy),
        ("/ops deploy promotions v1.2.5 extra", "Unexpected extra argument 'extra': deploy takes 2 arguments", deploy),
        ("/ops deploy promotions v1.2.5 --force", "Unknown flag '--force'; deploy accepts --env, --dry-run", deploy),
        ("/ops deploy promotions v1.2.5 --env", "--env needs a value: <env>", deploy),
        ("/ops deploy promotions v1.2.5 --env a --env b", "--env is given more than once", deploy),
        ("/ops deploy promotions latest", "'latest' is not a version", deploy),
        ("/ops deploy promotions v1.2", "'v1.2' is not a version", deploy),
        ("/ops deploy promotions v1.2.5-", "'v1.2.5-' is not a version", deploy),
        ("/ops deploy Promotions v1.2.5", "'Promotions' is not a valid name", deploy),
        ("/ops deploy promotions;rm v1.2.5", "is not a valid name", deploy),
        ("/ops deploy promotions v1.2.5 --dry-run=yes", "--dry-run is a switch", deploy),
        ("/ops restore promotions-db", "Missing --date", restore),
        ("/ops restore promotions-db --date 2023-10-27", "is not an RFC 3339 date", restore),
        ("/ops restore promotions-db --date 2023-13-27T10:00:00Z", "is not an RFC 3339 date", restore),
        ("/ops restore promotions-db --date 2023-10-27T10:00:00", "is not an RFC 3339 date", restore),
        ("/ops restore promotions-db --date yesterday", "'yesterday' is not an RFC 3339 date", restore),
        ("/ops restore db --date 2023-10-27T10:00:00Z --source http://x/y", "scheme must be s3 or gs", restore),
        ("/ops restore db --date 2023-10-27T10:00:00Z --source s3://bkt/../x", "'..' is not allowed", restore),
        ("/ops status 42", "'42' is not an execution id", "/ops status [<execution-id>]"),
        ("/ops cancel", "Missing <execution-id>", "/ops cancel <execution-id>"),
        ("/ops timeline", "Missing <execution-id>", "/ops timeline <execution-id>"),
        ("/ops history promotions --limit 0", "is not a number from 1 to 200", "/ops history [<service>] [--limit <N>]"),
        ("/ops history promotions --limit 9999", "is not a number from 1 to 200", "/ops history [<service>] [--limit <N>]"),
        ("/ops backup explode promotions-db", "'explode' is not a backup action", "/ops backup status|now|prune <database>"),
        ("/ops whoami please", "Unexpected extra argument 'please': whoami takes no arguments", "/ops whoami"),
        ("/ops run x promotions --set novalue", "'novalue' is not key=value", "/ops run <runbook> <target>"),
        ("/ops deploy promotions \"v1.2.5", "quote", general),
        ("/ops deploy\u{7}promotions v1.2.5", "control character (U+0007) at position 12", general),
        ("/ops deploy promotions\nv1.2.5", "control character (U+000A)", general),
        ("/ops deploy prom\u{202E}otions v1.2.5", "control character (U+202E)", general),
    ];
    for (input, needle, usage) in cases {
        let e = err(input);
        assert!(e.message.contains(needle), "{input:?}: message {:?} lacks {needle:?}", e.message);
        assert!(e.usage.starts_with(usage), "{input:?}: usage {:?} is not {usage:?}", e.usage);
        assert!(e.to_string().contains("Usage: /ops"), "{input:?}");
    }
}

#[test]
fn ten_kilobytes_of_text_is_refused_without_echoing_it() {
    let big = format!("/ops deploy {}", "a".repeat(10 * 1024));
    let e = err(&big);
    assert!(e.message.contains("characters long; the limit is 1000"), "{}", e.message);
    assert!(e.to_string().len() < 300, "the refusal must not echo the input");
}

#[test]
fn help_is_generated_from_the_same_table() {
    let text = help::overview();
    for c in spec::COMMANDS {
        assert!(text.contains(&c.usage()), "help lacks {}", c.name);
    }
    let restore = help::command(spec::find("restore").unwrap());
    assert!(restore.contains("--date <RFC3339>"));
    assert!(restore.contains("--source <s3://bucket/prefix>"));
}
