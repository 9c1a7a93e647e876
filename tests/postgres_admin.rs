//! `hueyd` admin commands against Postgres: a command that only reads refuses a schema that
//! does not exist (a mistyped `--pg-schema` would otherwise report an empty queue, and leave an
//! empty schema behind), as it refuses a SQLite file that does not exist.
#[macro_use]
mod common;

use common::pg_server::{fresh_schema, shared as server};

/// Run `hueyd ARGS...`; its exit code and stderr.
fn hueyd(args: &[&str]) -> (i32, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hueyd"))
        .args(args)
        .env_remove("HUEY_STORAGE")
        .env_remove("HUEY_PG_SCHEMA")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn schema_exists(schema: &str) -> bool {
    let mut c = postgres::Client::connect(&server().url(), postgres::NoTls).unwrap();
    c.query_opt("SELECT 1 FROM pg_namespace WHERE nspname = $1", &[&schema])
        .unwrap()
        .is_some()
}

#[test]
fn a_command_that_only_reads_refuses_a_schema_that_does_not_exist() {
    let missing = fresh_schema();
    let url = server().url();
    let commands: [&[&str]; 6] = [
        &["status"],
        &["inspect", "some-id"],
        &["results"],
        &["dead"],
        &["periodic", "list"],
        &["result", "some-id"],
    ];
    for cmd in commands {
        let mut args = vec!["--storage", &url, "--pg-schema", &missing];
        args.extend_from_slice(cmd);
        let (code, err) = hueyd(&args);
        assert_eq!(code, 2, "{cmd:?}: {err}");
        assert!(
            err.contains(&missing) && err.contains("does not exist"),
            "{cmd:?}: {err}"
        );
        assert!(!schema_exists(&missing), "{cmd:?} created the schema");
    }
    // `tasks` lists the registry without the storage's schedules, and creates nothing.
    let (code, err) = hueyd(&["--storage", &url, "--pg-schema", &missing, "tasks"]);
    assert_eq!(code, 0, "{err}");
    assert!(!schema_exists(&missing), "tasks created the schema");

    // Once a write created it, the same commands read it.
    let (code, err) = hueyd(&[
        "--storage",
        &url,
        "--pg-schema",
        &missing,
        "enqueue",
        "noop",
    ]);
    assert_eq!(code, 0, "{err}");
    let (code, err) = hueyd(&["--storage", &url, "--pg-schema", &missing, "status"]);
    assert_eq!(code, 0, "{err}");
}
