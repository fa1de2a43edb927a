//! The quickstart: no setup beyond `cargo run`.
//!
//! ```text
//! cargo run --release --example quickstart --features simulator,hubspot,gong,salesforce,monday,fireflies,google-drive [-- path/to/file.db]
//! ```
//!
//! It starts the built-in HubSpot, Gong, Salesforce and monday.com simulators on loopback (and
//! Fireflies' and Google Drive's with their features), creates a workspace with their connections in an SQLite
//! file (`pandora-quickstart.db` unless a path is given), runs an initial sync with a live
//! progress display, changes a few records in the
//! simulators, runs an incremental sync, runs the post-sync hooks (entity linker, internal
//! filter, computed fields), and prints a summary and a query to run next.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::process::ExitCode;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use pandora_sync::WorkspaceSyncResult;
use pandora_sync::connector::ProgressReporter;
use pandora_sync::simulator::{QuickstartConfig, run_quickstart};

fn print_run(name: &str, r: &WorkspaceSyncResult) {
    println!("\n{name} sync: {}", r.status());
    println!(
        "  {:<12} {:<12} {:<22} {:>9} {:>9} {:>10} {:>9} {:>8} {:>10}",
        "connector",
        "mode",
        "status",
        "inserted",
        "updated",
        "unchanged",
        "archived",
        "requests",
        "time"
    );
    for c in &r.connectors {
        println!(
            "  {:<12} {:<12} {:<22} {:>9} {:>9} {:>10} {:>9} {:>8} {:>8} ms",
            c.connector.to_string(),
            c.mode.to_string(),
            c.status.to_string(),
            c.counts.inserted,
            c.counts.updated,
            c.counts.unchanged,
            c.counts.archived,
            c.requests,
            c.duration_ms
        );
        if c.retries > 0 {
            println!("  {:<12} {} retries", "", c.retries);
        }
        if let Some(e) = &c.error {
            println!("  {:<12} error: {e}", "");
        }
    }
    for h in &r.hooks {
        match &h.error {
            None => println!("  hook {:<18} ok ({} ms)", h.name, h.duration_ms),
            Some(e) => println!("  hook {:<18} failed: {e}", h.name),
        }
    }
}

fn main() -> ExitCode {
    let database = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "pandora-quickstart.db".to_owned());
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let progress = ProgressReporter::new();
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {elapsed:>4} {msg} {pos} records")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(100));
    let mut rx = progress.subscribe();
    let shown = bar.clone();
    let result = rt.block_on(async move {
        let ticker = tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let p = rx.borrow_and_update().clone();
                shown.set_message(p.message);
                shown.set_position(p.current);
            }
        });
        let mut cfg = QuickstartConfig::new(&database);
        cfg.progress = Some(progress);
        let r = run_quickstart(cfg).await;
        ticker.abort();
        r
    });
    bar.finish_and_clear();
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("pandora_sync quickstart: workspace {}", report.workspace_id);
    print_run("initial", &report.initial);
    print_run("incremental", &report.incremental);
    let requests: u64 = report
        .initial
        .connectors
        .iter()
        .chain(&report.incremental.connectors)
        .map(|c| c.requests)
        .sum();
    let retries: u64 = report
        .initial
        .connectors
        .iter()
        .chain(&report.incremental.connectors)
        .map(|c| c.retries)
        .sum();
    println!("\nrows per table");
    for (table, n) in &report.tables {
        println!("  {table:<15} {n:>8}");
    }
    println!(
        "\nrequests {requests}, retries {retries}, linked conversations {} ({} with a deal), total {:.1} s",
        report.linked_conversations,
        report.conversations_with_deal,
        report.duration.as_secs_f64()
    );
    println!(
        "\nnext: sqlite3 {} \"SELECT c.title, a.name AS account, d.name AS deal FROM conversations c JOIN accounts a ON a.id = c.linked_account_id LEFT JOIN deals d ON d.id = c.linked_deal_id LIMIT 10;\"",
        report.database.display()
    );
    let failed = report.initial.status() == pandora_sync::store::SyncStatus::Failed
        || report.incremental.status() == pandora_sync::store::SyncStatus::Failed;
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
