//! Writes tasks through a [`TaskAdapter`]: create, update and complete monday.com items.
//!
//! ```text
//! cargo run --example tasks --features monday -- --connector monday \
//!   --base-url https://api.monday.com --credentials @monday.json --board 1234567890 \
//!   < actions.json
//! ```
//!
//! stdin holds a JSON array of actions, run one at a time, in order:
//!
//! ```json
//! [{"action": "create", "title": "Call Acme", "group_id": "topics", "status": "Working on it",
//!   "assignee_email": "ada@example.com", "due_date": "2024-06-01"},
//!  {"action": "update", "id": "9876543210", "status": "Stuck", "due_date": null},
//!  {"action": "complete", "id": "9876543210"}]
//! ```
//!
//! In an update, an absent field is left alone and `null` clears it. stdout gets a JSON array
//! with one `{"ok": true, "id": ".."}` or `{"ok": false, "error": ".."}` per action, in
//! order. Exit code 0 when every action succeeded, 1 when any failed, 2 for bad arguments
//! (unknown flags, unreadable credentials, stdin that is not a JSON array).
//!
//! `--credentials` takes JSON or `@path/to/file.json` with `{"api_token"}`; prefer the file
//! form (a token on the command line lands in shell history and `ps`). `--base-url` defaults
//! to `https://api.monday.com`.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::BTreeMap;
use std::io::Read;
use std::process::ExitCode;

use pandora_sync::TaskAdapter;
use pandora_sync::connector::{NewTask, TaskUpdate};
use pandora_sync::connectors::monday::{MondayConfig, MondayConnector, MondayCredentials};
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

const USAGE: &str = "usage: tasks --connector monday [--base-url <url>] --credentials <json|@file> --board <board id> < actions.json";

struct Args {
    base_url: String,
    credentials: Value,
    board: String,
}

fn read_json(flag: &str, value: &str) -> Result<Value, String> {
    let text = match value.strip_prefix('@') {
        Some(path) => {
            std::fs::read_to_string(path).map_err(|e| format!("{flag}: cannot read {path}: {e}"))?
        }
        None => value.to_owned(),
    };
    serde_json::from_str(&text).map_err(|e| format!("{flag}: not JSON: {e}"))
}

fn parse_args(argv: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut flags: BTreeMap<String, String> = BTreeMap::new();
    let mut argv = argv.peekable();
    while let Some(flag) = argv.next() {
        match flag.as_str() {
            "--connector" | "--base-url" | "--credentials" | "--board" => {
                let value = argv.next().ok_or_else(|| format!("{flag} needs a value"))?;
                if flags.insert(flag.clone(), value).is_some() {
                    return Err(format!("{flag} given twice"));
                }
            }
            "-h" | "--help" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    match flags.remove("--connector").as_deref() {
        Some("monday") => {}
        Some(other) => {
            return Err(format!(
                "--connector {other:?}: only monday writes tasks (a TaskAdapter)"
            ));
        }
        None => return Err("--connector is required (monday)".to_owned()),
    }
    let credentials = read_json(
        "--credentials",
        &flags
            .remove("--credentials")
            .ok_or("--credentials is required")?,
    )?;
    let board = flags.remove("--board").ok_or("--board is required")?;
    if board.is_empty() || !board.bytes().all(|c| c.is_ascii_digit()) {
        return Err(format!("--board {board:?} is not a board id"));
    }
    Ok(Args {
        base_url: flags
            .remove("--base-url")
            .unwrap_or_else(|| "https://api.monday.com".to_owned()),
        credentials,
        board,
    })
}

#[derive(Debug, Deserialize)]
#[serde(tag = "action", rename_all = "lowercase", deny_unknown_fields)]
enum Action {
    Create {
        title: String,
        #[serde(default)]
        group_id: Option<String>,
        #[serde(default)]
        status: Option<String>,
        #[serde(default)]
        assignee_email: Option<String>,
        #[serde(default)]
        due_date: Option<chrono::NaiveDate>,
    },
    Update {
        id: Value,
        #[serde(flatten)]
        update: TaskUpdate,
    },
    Complete {
        id: Value,
    },
}

fn id_of(v: &Value) -> Result<String, String> {
    match v {
        Value::String(s) if !s.trim().is_empty() => Ok(s.trim().to_owned()),
        Value::Number(n) if n.is_u64() => Ok(n.to_string()),
        other => Err(format!("\"id\" must be an item id, not {other}")),
    }
}

/// The keys each action takes (serde cannot deny unknown fields next to a flattened one).
fn check_keys(raw: &Value) -> Result<(), String> {
    let obj = raw.as_object().ok_or("an action is a JSON object")?;
    let allowed: &[&str] = match obj.get("action").and_then(Value::as_str) {
        Some("create") => &[
            "action",
            "title",
            "group_id",
            "status",
            "assignee_email",
            "due_date",
        ],
        Some("update") => &[
            "action",
            "id",
            "title",
            "status",
            "assignee_email",
            "due_date",
        ],
        Some("complete") => &["action", "id"],
        Some(other) => {
            return Err(format!(
                "unknown action {other:?} (create, update, complete)"
            ));
        }
        None => return Err("an action needs \"action\": create, update or complete".into()),
    };
    match obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(format!("unknown field {k:?}; expected one of {allowed:?}")),
        None => Ok(()),
    }
}

async fn run(connector: &MondayConnector, board: &str, raw: Value) -> Result<String, String> {
    check_keys(&raw)?;
    let action: Action = serde_json::from_value(raw).map_err(|e| format!("invalid action: {e}"))?;
    let ws = Uuid::nil();
    let task = match action {
        Action::Create {
            title,
            group_id,
            status,
            assignee_email,
            due_date,
        } => {
            let new = NewTask {
                board_id: board.to_owned(),
                group_id,
                title,
                status,
                assignee_email,
                due_date,
            };
            connector.create_task(ws, new).await
        }
        Action::Update { id, update } => connector.update_task(ws, &id_of(&id)?, update).await,
        Action::Complete { id } => connector.complete_task(ws, &id_of(&id)?).await,
    };
    task.map(|t| t.meta.source_id).map_err(|e| e.to_string())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let credentials = match MondayCredentials::from_lookup(|k| {
        args.credentials
            .get(k)
            .and_then(Value::as_str)
            .map(|s| SecretString::from(s.to_owned()))
    }) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: --credentials: {e}");
            return ExitCode::from(2);
        }
    };
    let connector = match MondayConnector::new(&args.base_url, credentials, MondayConfig::default())
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let mut input = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut input) {
        eprintln!("error: cannot read stdin: {e}");
        return ExitCode::from(2);
    }
    let actions: Vec<Value> = match serde_json::from_str(&input) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: stdin must be a JSON array of actions: {e}");
            return ExitCode::from(2);
        }
    };
    let mut results = Vec::with_capacity(actions.len());
    let mut failed = 0;
    // One at a time, in order.
    for (n, raw) in actions.into_iter().enumerate() {
        match run(&connector, &args.board, raw).await {
            Ok(id) => results.push(json!({"ok": true, "id": id})),
            Err(e) => {
                failed += 1;
                eprintln!("action {n} failed: {e}");
                results.push(json!({"ok": false, "error": e}));
            }
        }
    }
    println!("{}", Value::Array(results));
    if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
