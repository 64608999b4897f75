//! `check`: reads every row and reports inconsistencies; exit code 2 if there are any.

use std::process::ExitCode;

use redis_embedding::{Error, KeyType};
use serde_json::json;

use crate::{ui, Ctx, Select};

/// Arguments of `check`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    select: Select,
    /// The expected stored row size in bytes (default: each table's sampled size).
    #[arg(long, value_name = "BYTES")]
    row_bytes: Option<usize>,
    /// The keys' dtype: int64, int32 or string (default: numeric when every sampled key has
    /// 8 or 4 bytes).
    #[arg(long, value_name = "DTYPE", value_parser = crate::transfer::key_type)]
    key_dtype: Option<KeyType>,
}

/// Runs the check.
pub fn run(ctx: &Ctx, a: Args) -> Result<ExitCode, Error> {
    let admin = ctx.admin()?;
    let r = admin.check(
        &a.select.filter(),
        a.row_bytes,
        a.key_dtype,
        &ui::Bars::new(),
    )?;
    let found = r.findings.len() as u64 + r.more;
    if ctx.json {
        ui::json(&json!({
            "tables": r.tables,
            "rows": r.rows,
            "findings": r.findings.iter().map(|f| json!({
                "kind": f.kind.as_str(),
                "table": f.table,
                "bucket": f.bucket,
                "server": f.server,
                "detail": f.detail,
            })).collect::<Vec<_>>(),
            "more": r.more,
        }));
    } else {
        for f in &r.findings {
            println!(
                "{}  {}  {} on {}: {}",
                f.kind.as_str(),
                f.table,
                f.bucket,
                f.server,
                f.detail
            );
        }
        if r.more > 0 {
            println!("... and {} more", r.more);
        }
        println!(
            "checked {} rows in {} table(s): {}",
            r.rows,
            r.tables,
            if found == 0 {
                "no findings".to_owned()
            } else {
                format!("{found} finding(s)")
            }
        );
    }
    Ok(if found == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}
