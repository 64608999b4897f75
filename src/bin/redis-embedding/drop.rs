//! `drop`: deletes a table or a model tag, after printing what goes.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

use redis_embedding::admin::DropPlan;
use redis_embedding::Error;
use serde_json::json;

use crate::{ui, Ctx, Select};

/// Arguments of `drop`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    select: Select,
    /// Do not ask for confirmation.
    #[arg(long, short = 'y')]
    yes: bool,
}

/// What will go, as a text table.
fn print_plan(plan: &DropPlan) {
    let rows: Vec<Vec<String>> = plan
        .tables
        .iter()
        .map(|t| {
            vec![
                t.full_name(),
                t.buckets.len().to_string(),
                t.rows().to_string(),
                ui::size(t.bytes()),
            ]
        })
        .collect();
    println!("will delete:");
    ui::table(&["TABLE", "BUCKETS", "ROWS", "MEMORY"], &rows);
    for r in &plan.records {
        println!("and {}", String::from_utf8_lossy(r));
    }
}

/// Prints the plan, asks, deletes.
pub fn run(ctx: &Ctx, a: Args) -> Result<ExitCode, Error> {
    let admin = ctx.admin()?;
    let plan = admin.drop_plan(&a.select.filter())?;
    if plan.tables.is_empty() {
        if ctx.json {
            ui::json(&json!({ "deleted_keys": 0, "tables": [], "records": [] }));
        } else {
            println!("nothing to drop: no table matches");
        }
        return Ok(ExitCode::SUCCESS);
    }
    if ctx.json {
        // Scripts get the plan in the one JSON document, and are never asked.
        if !a.yes {
            return Err(Error::invalid(
                "drop --json: pass --yes (a script cannot confirm)",
            ));
        }
    } else {
        print_plan(&plan);
    }
    let keys = plan.keys().count();
    if !a.yes {
        if !std::io::stdin().is_terminal() {
            return Err(Error::invalid(
                "drop: refusing to delete without confirmation; pass --yes",
            ));
        }
        print!("delete these {keys} keys? [y/N] ");
        std::io::stdout().flush().ok();
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer).ok();
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            println!("nothing deleted");
            return Ok(ExitCode::from(1));
        }
    }
    let deleted = admin.drop_tables(&plan, &ui::Bars::new())?;
    if ctx.json {
        ui::json(&json!({
            "deleted_keys": deleted,
            "tables": plan.tables.iter().map(|t| json!({
                "table": t.full_name(),
                "buckets": t.buckets.len(),
                "rows": t.rows(),
                "bytes": t.bytes(),
            })).collect::<Vec<_>>(),
            "records": plan.records.iter().map(|r| String::from_utf8_lossy(r)).collect::<Vec<_>>(),
        }));
    } else {
        println!("deleted {deleted} keys of {} table(s)", plan.tables.len());
    }
    Ok(ExitCode::SUCCESS)
}
